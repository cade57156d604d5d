pub mod data_key;
pub mod index_key;
pub mod kek;
pub mod key_tenant;
