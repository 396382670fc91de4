//! `--nic` for `scripts/run`: a virtio-net NIC of dom0 on QEMU's user network
//! (the uplink of dom0's net back end): `user[,hostfwd=tcp::HOSTPORT-:GUESTPORT]...`.

use anyhow::{Result, bail};

/// One NIC for dom0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicSpec {
    /// `hostfwd=` rules, passed to QEMU as they are.
    pub hostfwd: Vec<String>,
}

impl NicSpec {
    /// Parses a `--nic` value.
    pub fn parse(spec: &str) -> Result<NicSpec> {
        let mut parts = spec.split(',');
        match parts.next() {
            Some("user") => {}
            other => bail!(
                "--nic {spec:?}: {:?} is not a network kind; only `user` (QEMU's user \
                 network) is offered",
                other.unwrap_or_default()
            ),
        }
        let mut n = NicSpec {
            hostfwd: Vec::new(),
        };
        for p in parts {
            match p.split_once('=') {
                Some(("hostfwd", rule)) if !rule.is_empty() => n.hostfwd.push(rule.to_string()),
                _ => {
                    bail!("--nic {spec:?}: unknown option {p:?} (hostfwd=tcp::HOSTPORT-:GUESTPORT)")
                }
            }
        }
        Ok(n)
    }

    /// QEMU's arguments for NIC number `index`.
    pub fn qemu_args(&self, index: usize) -> Vec<String> {
        let mut netdev = format!("user,id=nic{index}");
        for r in &self.hostfwd {
            netdev.push_str(",hostfwd=");
            netdev.push_str(r);
        }
        vec![
            "-netdev".into(),
            netdev,
            "-device".into(),
            format!("virtio-net-pci,netdev=nic{index}"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_become_qemu_arguments() {
        let n = NicSpec::parse("user,hostfwd=tcp::8080-:80").unwrap();
        assert_eq!(
            n.qemu_args(0),
            [
                "-netdev",
                "user,id=nic0,hostfwd=tcp::8080-:80",
                "-device",
                "virtio-net-pci,netdev=nic0"
            ]
        );
        assert_eq!(NicSpec::parse("user").unwrap().hostfwd.len(), 0);
        for (bad, why) in [
            ("tap", "not a network kind"),
            ("", "not a network kind"),
            ("user,fast", "unknown option"),
            ("user,hostfwd=", "unknown option"),
        ] {
            let e = format!("{:#}", NicSpec::parse(bad).unwrap_err());
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
