//! A real KMS API to test against: moto's server (`moto[server]` in `tests/python/requirements.txt`,
//! installed into `.venv` by `./infra/test.sh`).
//!
//! moto keeps its state in memory: [`Moto::stop`] + [`Moto::restart`] lose every key. For an
//! outage that keeps the keys, use [`Moto::pause`] / [`Moto::resume`] (SIGSTOP / SIGCONT): the
//! port still accepts connections but nothing answers, which is what a network partition or a
//! hung KMS endpoint looks like to a client.
//!
//! moto 5.2.5 answers HTTP 500 when `DisableKey`, `EnableKey`, `CancelKeyDeletion` or
//! `ScheduleKeyDeletion` name the key by its ARN (real KMS accepts an ARN, and Anshin stores
//! ARNs). The server is therefore started through a few lines of Python ([`MOTO_LAUNCHER`]) that
//! resolve the ARN to the key id in those four backend methods, then run `moto_server` as usual.

use crate::{free_port, wait_for_port};
use anshin_keys::provider::aws::{AwsKmsProvider, AwsSettings};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Region the test providers use.
pub const MOTO_REGION: &str = "ap-northeast-1";

/// A moto server on a free loopback port. Killed when dropped.
pub struct Moto {
    child: Option<Child>,
    paused: bool,
    pub port: u16,
}

/// Starts `moto.server.main` after teaching four KMS backend methods to accept key ARNs (see the
/// module documentation). Arguments are those of `moto_server`.
pub const MOTO_LAUNCHER: &str = r#"
import sys
from moto.kms.models import KmsBackend

def _by_key_id(method):
    def patched(self, key_id, *args, **kwargs):
        return method(self, self.get_key_id(key_id), *args, **kwargs)
    return patched

for _name in ("disable_key", "enable_key", "cancel_key_deletion", "schedule_key_deletion"):
    setattr(KmsBackend, _name, _by_key_id(getattr(KmsBackend, _name)))

from moto.server import main
sys.exit(main(sys.argv[1:]))
"#;

fn venv() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv")).to_path_buf()
}

impl Moto {
    /// Starts a fresh server (no keys) and waits until it accepts connections.
    pub fn start() -> Self {
        let mut moto = Self {
            child: None,
            paused: false,
            port: free_port(),
        };
        moto.spawn();
        moto
    }

    fn spawn(&mut self) {
        let venv = venv();
        assert!(
            venv.join("bin/moto_server").exists(),
            "{} is missing: run ./infra/test.sh (it creates .venv with tests/python/requirements.txt)",
            venv.join("bin/moto_server").display()
        );
        let bin = venv.join("bin/python");
        let child = Command::new(&bin)
            .args([
                "-c",
                MOTO_LAUNCHER,
                "-H",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        self.paused = false;
        assert!(
            wait_for_port(self.port, 60),
            "moto_server did not listen on 127.0.0.1:{} within 60 s",
            self.port
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("moto is running").id()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} {} failed", self.pid());
    }

    /// Kills the server (its keys are gone). The port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        self.paused = false;
    }

    /// Starts a new, empty server on the same port (moto keeps no state across restarts).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections are accepted but never answered; state is kept.
    pub fn pause(&mut self) {
        if !self.paused {
            self.signal("-STOP");
            self.paused = true;
        }
    }

    /// Lets a paused server run again (SIGCONT), with all its keys.
    pub fn resume(&mut self) {
        if self.paused {
            self.signal("-CONT");
            self.paused = false;
        }
    }

    /// An SDK configuration for this server: static dummy credentials, Region
    /// [`MOTO_REGION`], this server as endpoint.
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(MOTO_REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "testing", "testing", None, None, "moto",
                    ),
                ),
            )
            .build()
    }

    /// Settings for a provider on this server (test endpoint allowed, 2 s timeout).
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: MOTO_REGION.into(),
            endpoint_url: Some(self.endpoint()),
            allow_test_endpoint: true,
            timeout: Duration::from_secs(2),
        }
    }

    /// The AWS KMS provider, talking to this server.
    pub async fn provider(&self) -> AwsKmsProvider {
        AwsKmsProvider::from_sdk_config(&self.sdk_config(), &self.settings())
            .expect("provider on moto")
    }

    /// A plain KMS client on this server, for checking what the provider did (aliases, tags).
    pub fn kms_client(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL also ends a stopped process.
            child.kill().ok();
            child.wait().ok();
        }
    }
}
