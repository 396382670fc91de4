//! The tree of nodes, generation counts, node ownership counts, and the
//! transaction overlay that reads and writes go through.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::error::Error;
use crate::limits::{NODE_HDR_SIZE, PERM_SIZE, Quotas};
use crate::path;
use crate::perms::{self, Access, Perm, Who};

/// One node: a value, permissions, child names, and the generation count
/// of its last modification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The value (any bytes).
    pub value: Vec<u8>,
    /// Permissions; never empty.
    pub perms: Vec<Perm>,
    /// Child names, each NUL-terminated, in creation order (the wire form of
    /// `XS_DIRECTORY`).
    pub children: Vec<u8>,
    /// Generation count of the last write.
    pub generation: u64,
}

impl Node {
    /// Size of the node's record as the entry-size quota counts it.
    pub fn record_size(&self) -> usize {
        NODE_HDR_SIZE + self.perms.len() * PERM_SIZE + self.value.len() + self.children.len()
    }

    /// The owner (first permission entry).
    pub fn owner(&self) -> u32 {
        self.perms.first().map_or(0, |p| p.domid)
    }

    /// Child names.
    pub fn child_names(&self) -> impl Iterator<Item = &[u8]> {
        self.children
            .split(|&c| c == 0)
            .take(self.children.iter().filter(|&&c| c == 0).count())
    }

    fn add_child(&mut self, name: &str) {
        self.children.extend_from_slice(name.as_bytes());
        self.children.push(0);
    }

    fn remove_child(&mut self, name: &str) {
        let mut off = 0;
        let mut found = None;
        for c in self.child_names() {
            if c == name.as_bytes() {
                found = Some((off, c.len() + 1));
                break;
            }
            off += c.len() + 1;
        }
        if let Some((off, len)) = found {
            self.children.drain(off..off + len);
        }
    }
}

/// A watch event to be delivered: the node's path, whether only watches on
/// exactly that path match (children removed under a removed node), and the
/// permission lists any one of which must let a watcher read for it to see
/// the event (the node's, its parent's, and its old ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fire {
    pub path: String,
    pub exact: bool,
    pub perm_sets: Vec<Vec<Perm>>,
}

/// The committed tree.
#[derive(Debug)]
pub(crate) struct Store {
    nodes: BTreeMap<String, Node>,
    generation: u64,
    /// Nodes owned per domain.
    owned: BTreeMap<u32, u32>,
}

impl Store {
    /// The initial tree of the C daemon: `/`, `/tool`, `/tool/xenstored`,
    /// all owned by dom0 with no access for others.
    pub fn new() -> Store {
        let mut s = Store {
            nodes: BTreeMap::new(),
            generation: 0,
            owned: BTreeMap::new(),
        };
        let perms = alloc::vec![Perm::new(0, Access::None)];
        for (p, child) in [
            ("/", "tool"),
            ("/tool", "xenstored"),
            ("/tool/xenstored", ""),
        ] {
            let mut n = Node {
                value: Vec::new(),
                perms: perms.clone(),
                children: Vec::new(),
                generation: s.next_generation(),
            };
            if !child.is_empty() {
                n.add_child(child);
            }
            s.nodes.insert(p.to_string(), n);
            s.count_owner(0, 1);
        }
        s
    }

    fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// The generation count of the last committed change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A committed node.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every committed path, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Nodes `domid` owns.
    pub fn owned(&self, domid: u32) -> u32 {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    fn count_owner(&mut self, domid: u32, delta: i64) {
        let e = self.owned.entry(domid).or_insert(0);
        *e = u32::try_from((i64::from(*e) + delta).max(0)).unwrap_or(u32::MAX);
        if *e == 0 {
            self.owned.remove(&domid);
        }
    }

    fn put(&mut self, path: &str, node: Option<Node>) {
        let old = self.nodes.get(path).map(Node::owner);
        let new = node.as_ref().map(Node::owner);
        if old != new {
            if let Some(o) = old {
                self.count_owner(o, -1);
            }
            if let Some(n) = new {
                self.count_owner(n, 1);
            }
        }
        match node {
            Some(n) => {
                self.nodes.insert(path.to_string(), n);
            }
            None => {
                self.nodes.remove(path);
            }
        }
    }
}

/// A transaction: a private overlay of modified nodes plus the generation
/// each node had when the transaction first touched it.
#[derive(Debug)]
pub(crate) struct Txn {
    /// Modified nodes (`None`: removed).
    overlay: BTreeMap<String, Option<Node>>,
    /// Generation of each touched node at first access (`None`: absent),
    /// and its permissions then.
    accessed: BTreeMap<String, (Option<u64>, Option<Vec<Perm>>)>,
    /// Watch events to fire on commit, in order, with their exactness.
    fires: Vec<(String, bool)>,
    /// Nodes-owned changes per domain.
    owned_delta: BTreeMap<u32, i64>,
    /// Something failed in a way that cannot be undone: commit answers
    /// `ENOMEM` (as 4.17's `trans->fail`).
    pub failed: bool,
    /// A node was created (commit re-checks the node quota).
    node_created: bool,
}

impl Txn {
    pub fn new() -> Txn {
        Txn {
            overlay: BTreeMap::new(),
            accessed: BTreeMap::new(),
            fires: Vec::new(),
            owned_delta: BTreeMap::new(),
            failed: false,
            node_created: false,
        }
    }
}

/// A view of the store for one request: through a transaction or not.
pub(crate) struct View<'a> {
    pub store: &'a mut Store,
    pub txn: Option<&'a mut Txn>,
    pub who: Who,
    pub quotas: &'a Quotas,
    /// Events to fire now (outside a transaction).
    pub fires: Vec<Fire>,
}

impl View<'_> {
    fn unprivileged(&self) -> bool {
        !self.who.privileged
    }

    /// Record a first access in the transaction (`access_node`).
    fn touch(&mut self, path: &str) -> Result<(), Error> {
        let unpriv = self.unprivileged();
        let limit = self.quotas.trans_nodes;
        let Some(txn) = self.txn.as_deref_mut() else {
            return Ok(());
        };
        if txn.accessed.contains_key(path) {
            return Ok(());
        }
        if unpriv && txn.accessed.len() >= limit {
            txn.failed = true;
            return Err(Error::NoSpc);
        }
        let node = self.store.get(path);
        let entry = (node.map(|n| n.generation), node.map(|n| n.perms.clone()));
        txn.accessed.insert(path.to_string(), entry);
        Ok(())
    }

    /// Read a node (`read_node`).
    pub fn read(&mut self, path: &str) -> Result<Option<Node>, Error> {
        self.touch(path)?;
        if let Some(txn) = self.txn.as_deref() {
            if let Some(n) = txn.overlay.get(path) {
                return Ok(n.clone());
            }
        }
        Ok(self.store.get(path).cloned())
    }

    /// Nodes the caller owns, counting this transaction's changes.
    fn owned_by_caller(&self) -> i64 {
        let base = i64::from(self.store.owned(self.who.domid));
        let delta = self
            .txn
            .as_deref()
            .and_then(|t| t.owned_delta.get(&self.who.domid))
            .copied()
            .unwrap_or(0);
        base + delta
    }

    /// Check a node against the entry-size quota (`write_node_raw`).
    fn check_size(&mut self, node: &Node) -> Result<(), Error> {
        if self.unprivileged() && node.record_size() >= self.quotas.max_entry_size {
            return Err(Error::NoSpc);
        }
        Ok(())
    }

    /// Store `node` at `path` (or remove it), with a new generation count.
    fn put(&mut self, path: &str, node: Option<Node>) -> Result<(), Error> {
        self.touch(path)?;
        let node = node.map(|mut n| {
            n.generation = self.store.next_generation();
            n
        });
        match self.txn.as_deref_mut() {
            None => self.store.put(path, node),
            Some(txn) => {
                let old = match txn.overlay.get(path) {
                    Some(n) => n.as_ref().map(Node::owner),
                    None => self.store.get(path).map(Node::owner),
                };
                let new = node.as_ref().map(Node::owner);
                if old != new {
                    if let Some(o) = old {
                        *txn.owned_delta.entry(o).or_insert(0) -= 1;
                    }
                    if let Some(n) = new {
                        *txn.owned_delta.entry(n).or_insert(0) += 1;
                    }
                }
                txn.overlay.insert(path.to_string(), node);
            }
        }
        Ok(())
    }

    /// Queue a watch event (`fire_watches`): now, or on commit.
    fn fire(&mut self, path: &str, exact: bool, perm_sets: Vec<Vec<Perm>>) {
        match self.txn.as_deref_mut() {
            None => self.fires.push(Fire {
                path: path.to_string(),
                exact,
                perm_sets,
            }),
            Some(txn) => {
                // A non-exact event replaces an exact one (`queue_watches`).
                if let Some(f) = txn.fires.iter_mut().find(|f| f.0 == path) {
                    f.1 &= exact;
                } else {
                    txn.fires.push((path.to_string(), exact));
                }
            }
        }
    }

    /// `errno_from_parents`: hide a node's existence from callers that may
    /// not see its nearest existing ancestor.
    fn errno_from_parents(&mut self, path: &str, err: Error, perm: u8) -> Error {
        let mut p = path;
        loop {
            p = path::parent(p);
            match self.read(p) {
                Err(e) => return e,
                Ok(Some(n)) => {
                    return if perms::perm_for(&self.who, &n.perms) & perm != 0 {
                        err
                    } else {
                        Error::Acces
                    };
                }
                Ok(None) if p == "/" => return Error::Acces,
                Ok(None) => {}
            }
        }
    }

    /// `get_node`: the node if the caller has all of `perm` on it.
    pub fn get_node(&mut self, path: &str, perm: u8) -> Result<Node, Error> {
        let err = match self.read(path)? {
            Some(n) if perms::perm_for(&self.who, &n.perms) & perm == perm => return Ok(n),
            Some(_) => Error::Acces,
            None => Error::NoEnt,
        };
        Err(self.errno_from_parents(path, err, perm))
    }

    /// `create_node`: create `path` with `value`, and any missing parents.
    /// New nodes inherit their parent's permissions; an unprivileged creator
    /// becomes their owner.
    fn create(&mut self, path: &str, value: Vec<u8>) -> Result<Node, Error> {
        let mut missing = alloc::vec![path];
        let mut top = path;
        let mut parent = loop {
            top = path::parent(top);
            match self.read(top)? {
                Some(n) => break n,
                None if top == "/" => return Err(Error::NoEnt),
                None => missing.push(top),
            }
        };
        // Build the new nodes top-down, then check every quota before
        // writing anything.
        let mut built: Vec<(&str, Node)> = Vec::with_capacity(missing.len());
        let mut perms = parent.perms.clone();
        if self.unprivileged() {
            if let Some(first) = perms.first_mut() {
                first.domid = self.who.domid;
            }
        }
        parent.add_child(path::basename(missing[missing.len() - 1]));
        for (i, p) in missing.iter().rev().enumerate() {
            let mut n = Node {
                value: Vec::new(),
                perms: perms.clone(),
                children: Vec::new(),
                generation: 0,
            };
            if let Some(below) = missing.len().checked_sub(i + 2).map(|j| missing[j]) {
                n.add_child(path::basename(below));
            } else {
                n.value = value.clone();
            }
            built.push((p, n));
        }
        if self.unprivileged() {
            let after = self.owned_by_caller() + i64::try_from(built.len()).unwrap_or(i64::MAX);
            if after > i64::from(self.quotas.nb_entry_per_domain) {
                return Err(Error::NoSpc);
            }
        }
        for (_, n) in &built {
            self.check_size(n)?;
        }
        self.check_size(&parent)?;
        let parent_perms = match built.len().checked_sub(2) {
            Some(j) => built[j].1.perms.clone(),
            None => parent.perms.clone(),
        };
        self.put(top, Some(parent))?;
        let mut last = None;
        for (p, n) in built {
            self.put(p, Some(n.clone()))?;
            last = Some(n);
        }
        if let Some(t) = self.txn.as_deref_mut() {
            t.node_created = true;
        }
        let node = last.ok_or(Error::Io)?;
        self.fire(path, false, alloc::vec![node.perms.clone(), parent_perms]);
        Ok(node)
    }

    /// `XS_WRITE` on a valid absolute path.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Error> {
        match self.get_node(path, perms::WRITE) {
            Ok(mut n) => {
                n.value = value.to_vec();
                self.check_size(&n)?;
                let perms = n.perms.clone();
                self.put(path, Some(n))?;
                let parent = self.parent_perms(path)?;
                self.fire(path, false, alloc::vec![perms, parent]);
                Ok(())
            }
            Err(Error::NoEnt) => self.create(path, value.to_vec()).map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// `XS_MKDIR`: nothing happens if the node exists.
    pub fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        match self.get_node(path, perms::WRITE) {
            Ok(_) => Ok(()),
            Err(Error::NoEnt) => self.create(path, Vec::new()).map(|_| ()),
            Err(e) => Err(e),
        }
    }

    fn parent_perms(&mut self, path: &str) -> Result<Vec<Perm>, Error> {
        Ok(self
            .read(path::parent(path))?
            .map(|n| n.perms)
            .unwrap_or_default())
    }

    /// `XS_RM`: removing a missing node whose parent exists succeeds.
    pub fn rm(&mut self, path: &str) -> Result<(), Error> {
        match self.get_node(path, perms::WRITE) {
            Ok(_) if path == "/" => Err(Error::Inval),
            Ok(_) => self.rm_tree(path),
            Err(Error::NoEnt) => match self.read(path::parent(path))? {
                Some(_) => Ok(()),
                None => Err(Error::NoEnt),
            },
            Err(e) => Err(e),
        }
    }

    /// `rm_node`: remove `root` and everything below it, firing an exact
    /// event for each removed descendant and a normal one for `root`.
    pub fn rm_tree(&mut self, root: &str) -> Result<(), Error> {
        let parent_path = path::parent(root);
        let Some(mut parent) = self.read(parent_path)? else {
            return Err(Error::Inval);
        };
        // Collect the subtree in pre-order (iteratively: paths can be deep).
        let mut order: Vec<(String, Node, Vec<Perm>)> = Vec::new();
        let mut stack: Vec<(String, Vec<Perm>)> =
            alloc::vec![(root.to_string(), parent.perms.clone())];
        while let Some((p, pperms)) = stack.pop() {
            let Some(n) = self.read(&p)? else { continue };
            for c in n.child_names() {
                let name = core::str::from_utf8(c).map_err(|_| Error::Io)?;
                stack.push((path::child(&p, name), n.perms.clone()));
            }
            order.push((p, n, pperms));
        }
        // Remove children before parents (post-order).
        for (p, n, pperms) in order.into_iter().rev() {
            self.fire(&p, p != root, alloc::vec![n.perms, pperms]);
            self.put(&p, None)?;
        }
        parent.remove_child(path::basename(root));
        self.put(parent_path, Some(parent))
    }

    /// Replace a node's permissions without checks or events (bookkeeping
    /// when a domain goes away).
    pub fn set_perms_raw(&mut self, path: &str, node: Node) -> Result<(), Error> {
        self.put(path, Some(node))
    }

    /// `XS_SET_PERMS` on a valid absolute path.
    pub fn set_perms(&mut self, path: &str, perms: Vec<Perm>) -> Result<(), Error> {
        let mut n = self.get_node(path, perms::WRITE | perms::OWNER)?;
        if self.unprivileged() && perms.first().map(|p| p.domid) != Some(n.owner()) {
            return Err(Error::Perm);
        }
        let old = core::mem::replace(&mut n.perms, perms.clone());
        self.check_size(&n)?;
        self.put(path, Some(n))?;
        let parent = self.parent_perms(path)?;
        self.fire(path, false, alloc::vec![old, perms, parent]);
        Ok(())
    }
}

/// What a successful commit produces: the events to fire.
pub(crate) fn commit(
    store: &mut Store,
    txn: Txn,
    who: &Who,
    quotas: &Quotas,
) -> Result<Vec<Fire>, Error> {
    if txn.failed {
        return Err(Error::NoMem);
    }
    if txn.node_created && !who.privileged {
        for (&domid, &delta) in &txn.owned_delta {
            if domid != 0
                && i64::from(store.owned(domid)) + delta > i64::from(quotas.nb_entry_per_domain)
            {
                return Err(Error::NoSpc);
            }
        }
    }
    for (p, (generation, _)) in &txn.accessed {
        if store.get(p).map(|n| n.generation) != *generation {
            return Err(Error::Again);
        }
    }
    for (p, node) in txn.overlay {
        let node = node.map(|mut n| {
            n.generation = store.next_generation();
            n
        });
        store.put(&p, node);
    }
    let mut fires = Vec::with_capacity(txn.fires.len());
    for (p, exact) in txn.fires {
        let mut perm_sets = Vec::new();
        if let Some((_, Some(old))) = txn.accessed.get(&p) {
            perm_sets.push(old.clone());
        }
        if let Some(n) = store.get(&p) {
            perm_sets.push(n.perms.clone());
            if let Some(parent) = store.get(path::parent(&p)) {
                perm_sets.push(parent.perms.clone());
            }
        }
        fires.push(Fire {
            path: p,
            exact,
            perm_sets,
        });
    }
    Ok(fires)
}
