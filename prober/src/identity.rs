//! Who and where a worker is: its region (the ranking it publishes) and a
//! worker id unique within the region (its samples and its lease).

use origin_router::config::{is_name, Config};

/// Who and where this worker is.
#[derive(Debug, Clone)]
pub struct Identity {
    pub region: String,
    pub worker: String,
}

impl Identity {
    /// From the config, else `AWS_REGION` and host name plus pid.
    pub fn from_config(config: &Config) -> Identity {
        let region = config
            .prober
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| is_name(r)))
            .unwrap_or_else(|| "local".to_string());
        let worker = config.prober.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .unwrap_or_else(|| "worker".to_string());
            let host: String = host
                .trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
                .take(48)
                .collect();
            format!("{host}-{}", std::process::id())
        });
        Identity { region, worker }
    }
}
