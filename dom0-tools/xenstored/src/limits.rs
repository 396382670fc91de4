//! Quotas and limits, with Xen 4.17's defaults (`xenstored_core.c`).

/// Largest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub use hypercall_abi::io::xenstore::XENSTORE_ABS_PATH_MAX as ABS_PATH_MAX;
/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = hypercall_abi::io::xenstore::XENSTORE_PAYLOAD_MAX as usize;

/// Size of a node's record header in the C daemon's data base
/// (`struct xs_tdb_record_hdr`): the node-size quota counts it.
pub const NODE_HDR_SIZE: usize = 24;
/// Size of one permission entry in that record (`struct xs_permissions`).
pub const PERM_SIZE: usize = 8;

/// The per-domain quotas. Privileged connections (dom0) are exempt from all
/// of them except `event_queue_bytes`. `XS_CONTROL quota` shows and sets
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (`-E`, `quota_nb_entry_per_domain`, 1000);
    /// creating more answers `ENOSPC`.
    pub nb_entry_per_domain: u32,
    /// Largest node record: header + permissions + value + child names
    /// (`-S`, `quota_max_entry_size`, 2048 bytes); `ENOSPC` at or above.
    pub max_entry_size: usize,
    /// Watches per domain (`-W`, `quota_nb_watch_per_domain`, 128). As in
    /// 4.17, the check is "already more than this" so the 129th watch is
    /// still accepted; the next answers `E2BIG`.
    pub nb_watch_per_domain: u32,
    /// Open transactions per domain (`-t`, `quota_max_transaction`, 10).
    /// As in 4.17, "already more than this" answers `ENOSPC`, so 11 fit.
    pub max_transaction: u32,
    /// Permission entries per node set by a domain (`-A`,
    /// `quota_nb_perms_per_node`, 5); `ENOSPC` beyond.
    pub nb_perms_per_node: usize,
    /// Distinct nodes one transaction may touch (`-T`, `quota_trans_nodes`,
    /// 1024); beyond, the access answers `ENOSPC` and the transaction fails.
    pub trans_nodes: usize,
    /// Longest path below a domain's home `/local/domain/<id>/` (or of any
    /// other absolute path) a domain may use (`-M`, `quota_max_path_len`,
    /// `XENSTORE_REL_PATH_MAX` = 2048); longer is `EINVAL`.
    pub max_path_len: usize,
    /// Replies a domain may have queued before xenstored stops reading its
    /// requests (`-Q`, `quota_req_outstanding`, 20).
    pub req_outstanding: u32,
    /// Bytes of output (replies and watch events) queued for one connection
    /// beyond which further watch events are dropped and its requests are
    /// no longer read. Xen 4.17 bounds this with its per-domain memory
    /// quota (`quota_memory_per_domain_hard`, 2.5 MiB); we use the same
    /// number for the queue alone.
    pub event_queue_bytes: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            nb_entry_per_domain: 1000,
            max_entry_size: 2048,
            nb_watch_per_domain: 128,
            max_transaction: 10,
            nb_perms_per_node: 5,
            trans_nodes: 1024,
            max_path_len: hypercall_abi::io::xenstore::XENSTORE_REL_PATH_MAX,
            req_outstanding: 20,
            event_queue_bytes: 2 * 1024 * 1024 + 512 * 1024,
        }
    }
}
