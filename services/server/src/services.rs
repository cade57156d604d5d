//! Which services run in this process (`--services`), so a deployment can split them.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The REST API under /api/v1.
    Api,
    /// Server-rendered portal pages.
    Web,
    /// Background job worker and scheduler.
    Worker,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Api, Service::Web, Service::Worker];

    pub fn name(self) -> &'static str {
        match self {
            Service::Api => "api",
            Service::Web => "web",
            Service::Worker => "worker",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSet(Vec<Service>);

impl ServiceSet {
    pub fn all() -> Self {
        Self(Service::ALL.to_vec())
    }

    pub fn parse(list: Option<&str>) -> Result<Self, String> {
        let Some(list) = list.map(str::trim).filter(|l| !l.is_empty() && *l != "all") else {
            return Ok(Self::all());
        };
        let mut out = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let s = Service::ALL
                .into_iter()
                .find(|s| s.name() == part)
                .ok_or_else(|| {
                    format!("unknown service '{part}' in --services; choose from api, web, worker")
                })?;
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(Self(out))
    }

    pub fn contains(&self, s: Service) -> bool {
        self.0.contains(&s)
    }
}

impl fmt::Display for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.name()).collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(ServiceSet::parse(None).unwrap(), ServiceSet::all());
        let s = ServiceSet::parse(Some("api, worker")).unwrap();
        assert!(
            s.contains(Service::Api) && s.contains(Service::Worker) && !s.contains(Service::Web)
        );
        assert!(ServiceSet::parse(Some("api,drift"))
            .unwrap_err()
            .contains("drift"));
    }
}
