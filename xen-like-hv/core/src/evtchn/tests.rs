//! Host tests: every op's success path and refusals, the interdomain lifecycle across
//! tables, delivery rules, and a property test over random op sequences.

use super::*;
use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu,
    EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOp, EvtchnOpCompat,
    EvtchnReset, EvtchnSend, EvtchnSetPriority, EvtchnStat, EvtchnStatus, EvtchnUnmask, Virq,
    port_word_bit,
};
use hypercall_abi::xen::SharedInfo;
use std::boxed::Box;
use std::vec::Vec;
use zerocopy::{FromZeros, IntoBytes};

mod props;

struct Dom {
    table: Box<EvtchnTable>,
    shared: Box<SharedInfo>,
    paused: bool,
}

/// Domains by id (index).
struct World {
    doms: Vec<Option<Dom>>,
}

impl Domains for World {
    type Bits<'a> = &'a mut SharedInfo;

    fn get(&mut self, dom: DomId) -> Option<DomainEvtchn<'_, &mut SharedInfo>> {
        let d = self.doms.get_mut(usize::from(dom.0))?.as_mut()?;
        Some(DomainEvtchn {
            table: &mut d.table,
            bits: &mut d.shared,
            controller_paused: d.paused,
        })
    }

    fn get_pair(
        &mut self,
        a: DomId,
        b: DomId,
    ) -> Option<(
        DomainEvtchn<'_, &mut SharedInfo>,
        DomainEvtchn<'_, &mut SharedInfo>,
    )> {
        let (x, y) = pair_mut(&mut self.doms, usize::from(a.0), usize::from(b.0))?;
        let (x, y) = (x.as_mut()?, y.as_mut()?);
        Some((
            DomainEvtchn {
                table: &mut x.table,
                bits: &mut x.shared,
                controller_paused: x.paused,
            },
            DomainEvtchn {
                table: &mut y.table,
                bits: &mut y.shared,
                controller_paused: y.paused,
            },
        ))
    }
}

fn new_dom(id: u16, max_port: u32, vcpus: u32) -> Dom {
    Dom {
        table: Box::new(EvtchnTable::new(
            DomId(id),
            EvtchnConfig {
                max_port,
                nr_vcpus: vcpus,
            },
        )),
        shared: Box::new(SharedInfo::new_zeroed()),
        paused: false,
    }
}

/// Domains 0 (privileged in tests that say so), 1 and 2, two vCPUs each.
fn world() -> World {
    World {
        doms: (0..3)
            .map(|i| Some(new_dom(i, UNLIMITED_MAX_PORT, 2)))
            .collect(),
    }
}

impl World {
    fn d(&self, id: u16) -> &Dom {
        self.doms[usize::from(id)].as_ref().unwrap()
    }
    fn dm(&mut self, id: u16) -> &mut Dom {
        self.doms[usize::from(id)].as_mut().unwrap()
    }
    fn state(&self, id: u16, port: EvtchnPort) -> Option<PortState> {
        self.d(id).table.state(port)
    }
    fn pending(&self, id: u16, port: EvtchnPort) -> bool {
        self.d(id).shared.is_pending(port)
    }
    fn mask(&mut self, id: u16, port: EvtchnPort) {
        let (w, b) = port_word_bit(port);
        self.dm(id).shared.evtchn_mask[w] |= 1 << b;
    }
    fn masked(&self, id: u16, port: EvtchnPort) -> bool {
        self.d(id).shared.is_masked(port)
    }
    /// The guest's upcall handler on every vCPU (clears what it handles).
    fn guest_handle(&mut self, id: u16) {
        let si = &mut self.dm(id).shared;
        for v in 0..si.vcpu_info.len() {
            si.vcpu_info[v].evtchn_upcall_pending = 0;
            let sel = core::mem::take(&mut si.vcpu_info[v].evtchn_pending_sel);
            for w in 0..64 {
                if sel & (1 << w) != 0 {
                    si.evtchn_pending[w] &= si.evtchn_mask[w];
                }
            }
        }
    }
    fn run(&mut self, caller: &Caller, req: EvtchnRequest) -> Result<EvtchnReply, EvtchnError> {
        dispatch(self, caller, req)
    }
    fn alloc(&mut self, caller: u16, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno> {
        alloc_unbound(
            self,
            &priv_caller(caller),
            EvtchnAllocUnbound {
                dom,
                remote_dom: remote,
                port: EvtchnPort(0),
            },
        )
        .map(|r| r.port)
        .map_err(Errno::from)
    }
    fn bind(&mut self, caller: u16, rdom: u16, rport: EvtchnPort) -> Result<EvtchnPort, Errno> {
        bind_interdomain(
            self,
            &Caller::domu(DomId(caller)),
            EvtchnBindInterdomain {
                remote_dom: DomId(rdom),
                _pad: 0,
                remote_port: rport,
                local_port: EvtchnPort(0),
            },
        )
        .map(|(r, _)| r.local_port)
        .map_err(Errno::from)
    }
    fn send(&mut self, dom: u16, port: EvtchnPort) -> Result<Option<Kick>, Errno> {
        send(self, DomId(dom), port).map_err(Errno::from)
    }
    fn close(&mut self, dom: u16, port: EvtchnPort) -> Result<(), Errno> {
        close(self, DomId(dom), port).map_err(Errno::from)
    }
    fn status(
        &mut self,
        caller: &Caller,
        dom: DomId,
        port: EvtchnPort,
    ) -> Result<EvtchnStatus, Errno> {
        status(
            self,
            caller,
            EvtchnStatus {
                dom,
                port,
                ..Default::default()
            },
        )
        .map_err(Errno::from)
    }
    fn table(&mut self, id: u16) -> &mut EvtchnTable {
        &mut self.dm(id).table
    }
}

/// Domain `id`; privileged when it is 0.
fn priv_caller(id: u16) -> Caller {
    Caller {
        privileged: id == 0,
        ..Caller::domu(DomId(id))
    }
}

fn p(n: u32) -> EvtchnPort {
    EvtchnPort(n)
}

fn virq(v: u32, vcpu: u32) -> EvtchnBindVirq {
    EvtchnBindVirq {
        virq: v,
        vcpu: VcpuId(vcpu),
        port: p(0),
    }
}

// ---------------------------------------------------------------- fresh table, status

#[test]
fn fresh_table_reserves_port_zero_and_validates_by_bucket() {
    let mut w = world();
    assert_eq!(w.state(1, p(0)), Some(PortState::Reserved));
    assert_eq!(w.state(1, p(63)), Some(PortState::Free));
    assert_eq!(w.state(1, p(64)), None);
    let me = Caller::domu(DomId(1));
    let s = w.status(&me, DomId::SELF, p(0)).unwrap();
    assert_eq!(s.status, EvtchnStat::Closed as u32);
    assert_eq!(w.status(&me, DomId::SELF, p(63)).unwrap().status, 0);
    assert_eq!(w.status(&me, DomId::SELF, p(64)), Err(Errno::EINVAL));
    assert_eq!(w.status(&me, DomId(7), p(1)), Err(Errno::ESRCH));
    assert_eq!(w.d(1).table.ports().count(), 0);
    assert!(format!("{:?}", w.d(1).table).contains("EvtchnTable"));
}

#[test]
fn table_is_compact() {
    assert!(core::mem::size_of::<EvtchnTable>() <= 36 * 1024 + 256);
}

#[test]
fn reinit_matches_new() {
    let mut w = world();
    w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    w.table(1)
        .bind_virq(virq(Virq::Timer as u32, 1), GlobalVirqPolicy::Any)
        .unwrap();
    w.table(1)
        .reinit(
            DomId(5),
            EvtchnConfig {
                max_port: 9,
                nr_vcpus: 99,
            },
        )
        .unwrap();
    let t = &w.d(1).table;
    assert_eq!(t.domid(), DomId(5));
    assert_eq!(t.max_port(), 9);
    assert_eq!(t.nr_vcpus() as usize, MAX_VCPUS);
    assert_eq!(t.ports().count(), 0);
    assert_eq!(t.virq_port(Virq::Timer as u32, VcpuId(1)), None);
    assert_eq!(t.state(p(0)), Some(PortState::Reserved));
    assert_eq!(t.valid_ports(), PORTS_PER_BUCKET);
}

#[test]
fn port_storage_covers_the_limit_in_whole_buckets() {
    assert_eq!(port_storage(0), 64);
    assert_eq!(port_storage(9), 64);
    assert_eq!(port_storage(63), 64);
    assert_eq!(port_storage(64), 128);
    assert_eq!(port_storage(1023), 1024);
    assert_eq!(port_storage(4095), NR_PORTS);
    assert_eq!(port_storage(u32::MAX), NR_PORTS);
}

#[test]
fn a_small_table_fills_its_limit_and_no_further() {
    // A domU's table stores only its own ports: every one up to the limit is usable.
    let mut t = EvtchnTable::new(
        DomId(3),
        EvtchnConfig {
            max_port: 70,
            nr_vcpus: 1,
        },
    );
    let mut last = 0;
    while let Ok(port) = t.alloc_port() {
        t.set(port, PortState::Unbound { remote: DomId(0) }, 0);
        last = port.0;
    }
    assert_eq!(last, 70);
    assert_eq!(t.ports().count(), 70);
    // Reused for a domain with a higher limit, the storage grows with it.
    t.reinit(
        DomId(4),
        EvtchnConfig {
            max_port: 200,
            nr_vcpus: 1,
        },
    )
    .unwrap();
    let mut n = 0;
    while let Ok(port) = t.alloc_port() {
        t.set(port, PortState::Unbound { remote: DomId(0) }, 0);
        n += 1;
    }
    assert_eq!(n, 200);
}

#[test]
fn status_reports_every_state_and_keeps_unwritten_bytes() {
    let mut w = world();
    let me = Caller::domu(DomId(1));
    let a = w.alloc(1, DomId::SELF, DomId::SELF).unwrap();
    // The DOMID_SELF trick: the real id comes back.
    let st = status(
        &mut w,
        &me,
        EvtchnStatus {
            dom: DomId::SELF,
            port: a,
            u: [0xABCD_0000, 0x1234],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(st.status, EvtchnStat::Unbound as u32);
    assert_eq!(st.unbound_dom(), DomId(1));
    assert_eq!(st.u, [0xABCD_0001, 0x1234]);
    assert_eq!(st.vcpu, VcpuId(0));

    let b = w.bind(1, 1, a).unwrap(); // loopback
    let st = w.status(&me, DomId(1), b).unwrap();
    assert_eq!(st.status, EvtchnStat::Interdomain as u32);
    assert_eq!(st.interdomain(), (DomId(1), a));
    let st = w.status(&me, DomId(1), a).unwrap();
    assert_eq!(st.interdomain(), (DomId(1), b));

    let v = w
        .table(1)
        .bind_virq(virq(Virq::Debug as u32, 1), GlobalVirqPolicy::Any)
        .unwrap()
        .port;
    let st = w.status(&me, DomId::SELF, v).unwrap();
    assert_eq!((st.status, st.irq(), st.vcpu), (4, 1, VcpuId(1)));

    let i = w
        .table(1)
        .bind_ipi(EvtchnBindIpi {
            vcpu: VcpuId(1),
            port: p(0),
        })
        .unwrap()
        .port;
    let st = w.status(&me, DomId::SELF, i).unwrap();
    assert_eq!((st.status, st.vcpu), (5, VcpuId(1)));

    let mut c = me;
    c.pirqs = PirqAccess {
        nr_pirqs: 32,
        permitted: true,
    };
    let pq = w
        .table(1)
        .bind_pirq(
            EvtchnBindPirq {
                pirq: 9,
                flags: 0,
                port: p(0),
            },
            &c,
        )
        .unwrap()
        .port;
    let st = w.status(&me, DomId::SELF, pq).unwrap();
    assert_eq!((st.status, st.irq()), (3, 9));
}

#[test]
fn status_of_another_domain_needs_privilege() {
    let mut w = world();
    let a = w.alloc(2, DomId::SELF, DomId(1)).unwrap();
    assert_eq!(
        w.status(&Caller::domu(DomId(1)), DomId(2), a),
        Err(Errno::EPERM)
    );
    // An invalid port is refused before the permission check, as in Xen.
    assert_eq!(
        w.status(&Caller::domu(DomId(1)), DomId(2), p(500)),
        Err(Errno::EINVAL)
    );
    let st = w.status(&priv_caller(0), DomId(2), a).unwrap();
    assert_eq!(st.unbound_dom(), DomId(1));
}

// ---------------------------------------------------------------- alloc_unbound

#[test]
fn alloc_unbound_paths() {
    let mut w = world();
    assert_eq!(w.alloc(1, DomId::SELF, DomId(2)), Ok(p(1)));
    assert_eq!(w.alloc(1, DomId(1), DomId(2)), Ok(p(2)));
    assert_eq!(
        w.state(1, p(2)),
        Some(PortState::Unbound { remote: DomId(2) })
    );
    // Remote DOMID_SELF records the caller, even when allocating in another domain.
    assert_eq!(w.alloc(0, DomId(2), DomId::SELF), Ok(p(1)));
    assert_eq!(
        w.state(2, p(1)),
        Some(PortState::Unbound { remote: DomId(0) })
    );
    assert_eq!(w.alloc(1, DomId(2), DomId(1)), Err(Errno::EPERM));
    assert_eq!(w.alloc(1, DomId(9), DomId(1)), Err(Errno::ESRCH));
    assert_eq!(w.alloc(1, DomId::IO, DomId(1)), Err(Errno::ESRCH));
    // Free ports are reused lowest first.
    w.close(1, p(1)).unwrap();
    assert_eq!(w.alloc(1, DomId::SELF, DomId(2)), Ok(p(1)));
}

#[test]
fn exhaustion_is_enospc_and_respects_the_toolstack_limit() {
    let mut w = world();
    *w.dm(1) = new_dom(1, 10, 1);
    for n in 1..=10 {
        assert_eq!(w.alloc(1, DomId::SELF, DomId(2)), Ok(p(n)));
    }
    assert_eq!(w.alloc(1, DomId::SELF, DomId(2)), Err(Errno::ENOSPC));
    assert_eq!(
        w.table(1)
            .bind_ipi(EvtchnBindIpi {
                vcpu: VcpuId(0),
                port: p(0)
            })
            .map_err(Errno::from),
        Err(Errno::ENOSPC)
    );
    // ENOSPC comes before EPERM for a foreign allocation.
    assert_eq!(w.alloc(2, DomId(1), DomId(2)), Err(Errno::ENOSPC));
    // The whole 2-level space.
    for n in 1..4096 {
        assert_eq!(w.alloc(2, DomId::SELF, DomId(1)), Ok(p(n)));
    }
    assert_eq!(w.d(2).table.valid_ports(), 4096);
    assert_eq!(w.alloc(2, DomId::SELF, DomId(1)), Err(Errno::ENOSPC));
    // Local exhaustion also stops bind_interdomain.
    let a = w.alloc(0, DomId::SELF, DomId(1)).unwrap();
    assert_eq!(w.bind(1, 0, a), Err(Errno::ENOSPC));
}

// ---------------------------------------------------------------- interdomain lifecycle

#[test]
fn interdomain_lifecycle() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    let (out, kick) = bind_interdomain(
        &mut w,
        &Caller::domu(DomId(2)),
        EvtchnBindInterdomain {
            remote_dom: DomId(1),
            _pad: 0,
            remote_port: a,
            local_port: p(0),
        },
    )
    .unwrap();
    let b = out.local_port;
    // The local end is flagged on bind, and that raises vCPU 0's upcall.
    assert_eq!(
        kick,
        Some(Kick {
            dom: DomId(2),
            port: b,
            upcall: Some(VcpuId(0)),
            pollers: true
        })
    );
    assert!(w.pending(2, b));
    assert_eq!(
        w.state(1, a),
        Some(PortState::Interdomain {
            remote: DomId(2),
            port: b
        })
    );
    assert_eq!(
        w.state(2, b),
        Some(PortState::Interdomain {
            remote: DomId(1),
            port: a
        })
    );
    w.guest_handle(2);

    // 1 -> 2
    let k = w.send(1, a).unwrap().unwrap();
    assert_eq!((k.dom, k.port, k.upcall), (DomId(2), b, Some(VcpuId(0))));
    assert!(w.pending(2, b));
    assert!(!w.pending(1, a));
    // Already pending: nothing more to do.
    assert_eq!(w.send(1, a), Ok(None));
    // 2 -> 1
    let k = w.send(2, b).unwrap().unwrap();
    assert_eq!((k.dom, k.port), (DomId(1), a));
    assert!(w.pending(1, a));

    // Close 1's end: 2's end reverts to unbound for 1 and sends are dropped.
    w.close(1, a).unwrap();
    assert_eq!(w.state(1, a), Some(PortState::Free));
    assert!(!w.pending(1, a), "close clears the pending bit");
    assert_eq!(w.state(2, b), Some(PortState::Unbound { remote: DomId(1) }));
    w.guest_handle(2);
    assert_eq!(w.send(2, b), Ok(None));
    assert_eq!(w.send(1, a), Err(Errno::EINVAL));

    // Domain 1 re-binds to the reverted port.
    let a2 = w.bind(1, 2, b).unwrap();
    assert_eq!(
        w.state(2, b),
        Some(PortState::Interdomain {
            remote: DomId(1),
            port: a2
        })
    );
    assert!(w.pending(1, a2), "flagged on bind");
    w.guest_handle(1);
    assert!(w.send(2, b).unwrap().is_some());
    assert!(w.pending(1, a2));
}

#[test]
fn interdomain_peer_keeps_its_vcpu() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    w.table(1)
        .bind_vcpu(EvtchnBindVcpu {
            port: a,
            vcpu: VcpuId(1),
        })
        .unwrap();
    let b = w.bind(2, 1, a).unwrap();
    assert_eq!(w.d(1).table.notify_vcpu(a), Some(VcpuId(1)));
    let k = w.send(2, b).unwrap().unwrap();
    assert_eq!(k.upcall, Some(VcpuId(1)));
    w.close(2, b).unwrap();
    assert_eq!(w.d(1).table.notify_vcpu(a), Some(VcpuId(1)));
}

#[test]
fn loopback_interdomain() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId::SELF).unwrap();
    let b = w.bind(1, DomId::SELF.0, a).unwrap();
    assert_ne!(a, b);
    w.guest_handle(1);
    let k = w.send(1, a).unwrap().unwrap();
    assert_eq!((k.dom, k.port), (DomId(1), b));
    let k = w.send(1, b).unwrap().unwrap();
    assert_eq!(k.port, a);
    w.close(1, b).unwrap();
    assert_eq!(w.state(1, a), Some(PortState::Unbound { remote: DomId(1) }));
}

#[test]
fn bind_interdomain_refusals() {
    let mut w = world();
    let for2 = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    assert_eq!(w.bind(2, 9, for2), Err(Errno::ESRCH));
    assert_eq!(w.bind(2, 1, p(64)), Err(Errno::EINVAL), "invalid port");
    assert_eq!(w.bind(2, 1, p(5)), Err(Errno::EINVAL), "free port");
    assert_eq!(w.bind(2, 1, p(0)), Err(Errno::EINVAL), "reserved port");
    // A port unbound for domain 2 is not bindable by domain 0 (or by its owner).
    assert_eq!(w.bind(0, 1, for2), Err(Errno::EINVAL));
    assert_eq!(w.bind(1, 1, for2), Err(Errno::EINVAL));
    // Already connected: not bindable again.
    w.bind(2, 1, for2).unwrap();
    assert_eq!(w.bind(2, 1, for2), Err(Errno::EINVAL));
    // Failures leave no half-made binding.
    assert_eq!(w.d(0).table.ports().count(), 0);
}

#[test]
fn no_event_reaches_an_unconnected_domain() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    let b = w.bind(2, 1, a).unwrap();
    w.guest_handle(2);
    // Domain 0 tries every way it has: its own ports only ever name itself.
    let zero = &Caller::domu(DomId(0));
    assert_eq!(w.bind(0, 1, a), Err(Errno::EINVAL));
    assert_eq!(w.bind(0, 2, b), Err(Errno::EINVAL));
    for port in [a, b, p(0), p(1), p(2)] {
        let _ = w.send(0, port);
        let _ = w.run(zero, EvtchnRequest::Close(EvtchnClose { port }));
        let _ = w.run(zero, EvtchnRequest::Unmask(EvtchnUnmask { port }));
    }
    assert_eq!(w.d(1).shared.evtchn_pending, [0; 64]);
    assert_eq!(w.d(2).shared.evtchn_pending, [0; 64]);
    assert_eq!(
        w.state(1, a),
        Some(PortState::Interdomain {
            remote: DomId(2),
            port: b
        })
    );
}

// ---------------------------------------------------------------- send

#[test]
fn send_refusals_and_drops() {
    let mut w = world();
    assert_eq!(w.send(1, p(0)), Err(Errno::EINVAL), "reserved");
    assert_eq!(w.send(1, p(3)), Err(Errno::EINVAL), "free");
    assert_eq!(w.send(1, p(4000)), Err(Errno::EINVAL), "invalid");
    let v = w
        .table(1)
        .bind_virq(virq(Virq::Timer as u32, 0), GlobalVirqPolicy::Any)
        .unwrap()
        .port;
    assert_eq!(w.send(1, v), Err(Errno::EINVAL), "virq");
    let u = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    assert_eq!(w.send(1, u), Ok(None), "unbound: dropped");
    assert!(!w.pending(1, u));
    assert_eq!(w.send(9, u), Err(Errno::ESRCH));
}

#[test]
fn ipi_sends_to_its_own_vcpu() {
    let mut w = world();
    assert_eq!(
        w.table(1)
            .bind_ipi(EvtchnBindIpi {
                vcpu: VcpuId(2),
                port: p(0)
            })
            .map_err(Errno::from),
        Err(Errno::ENOENT)
    );
    let i = w
        .table(1)
        .bind_ipi(EvtchnBindIpi {
            vcpu: VcpuId(1),
            port: p(0),
        })
        .unwrap()
        .port;
    let k = w.send(1, i).unwrap().unwrap();
    assert_eq!(
        k,
        Kick {
            dom: DomId(1),
            port: i,
            upcall: Some(VcpuId(1)),
            pollers: true
        }
    );
    let (word, _) = port_word_bit(i);
    assert_eq!(w.d(1).shared.vcpu_info[1].evtchn_pending_sel, 1 << word);
    assert_eq!(w.d(1).shared.vcpu_info[0].evtchn_pending_sel, 0);
    // IPIs do not move.
    assert_eq!(
        w.table(1)
            .bind_vcpu(EvtchnBindVcpu {
                port: i,
                vcpu: VcpuId(0)
            })
            .map_err(Errno::from),
        Err(Errno::EINVAL)
    );
}

// ---------------------------------------------------------------- delivery (§7.3)

#[test]
fn set_pending_follows_the_two_level_rules() {
    let mut si = Box::new(SharedInfo::new_zeroed());
    let port = p(130); // word 2
    // Masked: pending but no selector/upcall; pollers still woken.
    si.evtchn_mask[2] = 1 << 2;
    let k = set_pending(&mut *si, DomId(3), port, VcpuId(1)).unwrap();
    assert_eq!((k.upcall, k.pollers), (None, true));
    assert_eq!(si.vcpu_info[1].evtchn_pending_sel, 0);
    assert_eq!(si.evtchn_pending[2], 1 << 2);
    // Already pending: nothing.
    assert_eq!(set_pending(&mut *si, DomId(3), port, VcpuId(1)), None);
    // Unmasked, selector already set: no new upcall.
    si.evtchn_mask[2] = 0;
    si.evtchn_pending[2] = 0;
    si.vcpu_info[1].evtchn_pending_sel = 1 << 2;
    let k = set_pending(&mut *si, DomId(3), port, VcpuId(1)).unwrap();
    assert_eq!(k.upcall, None);
    assert_eq!(si.vcpu_info[1].evtchn_upcall_pending, 0);
    // Selector newly set but upcall already pending: no kick.
    si.evtchn_pending[2] = 0;
    si.vcpu_info[1].evtchn_pending_sel = 0;
    si.vcpu_info[1].evtchn_upcall_pending = 1;
    assert_eq!(
        set_pending(&mut *si, DomId(3), port, VcpuId(1))
            .unwrap()
            .upcall,
        None
    );
    // Everything clear: kick.
    *si = SharedInfo::new_zeroed();
    assert_eq!(
        set_pending(&mut *si, DomId(3), port, VcpuId(1))
            .unwrap()
            .upcall,
        Some(VcpuId(1))
    );
    assert_eq!(si.vcpu_info[1].evtchn_upcall_pending, 1);
    // Out of range is ignored.
    assert_eq!(set_pending(&mut *si, DomId(3), p(4096), VcpuId(1)), None);
    assert_eq!(
        set_pending(&mut *si, DomId(3), p(1), VcpuId(40)),
        Some(Kick {
            dom: DomId(3),
            port: p(1),
            upcall: None,
            pollers: true
        })
    );
}

#[test]
fn unmask_reraises_exactly_when_xen_does() {
    let mut w = world();
    let u = |port| EvtchnRequest::Unmask(EvtchnUnmask { port });
    let me = Caller::domu(DomId(1));
    let i = w
        .table(1)
        .bind_ipi(EvtchnBindIpi {
            vcpu: VcpuId(1),
            port: p(0),
        })
        .unwrap()
        .port;
    // Masked and then sent: pending, no upcall.
    w.mask(1, i);
    assert_eq!(w.send(1, i).unwrap().unwrap().upcall, None);
    // Unmask: mask cleared, event re-raised on the port's vCPU.
    let r = w.run(&me, u(i)).unwrap();
    assert_eq!(r.kick.unwrap().upcall, Some(VcpuId(1)));
    assert!(!r.kick.unwrap().pollers);
    assert!(!w.masked(1, i));
    // Mask bit already clear (the guest cleared it itself): unmask does nothing.
    w.guest_handle(1);
    w.dm(1).shared.evtchn_pending[0] |= 1 << i.0;
    assert_eq!(w.run(&me, u(i)).unwrap().kick, None);
    // Masked but not pending: only the mask is cleared.
    w.guest_handle(1);
    w.dm(1).shared.evtchn_pending[0] = 0;
    w.mask(1, i);
    assert_eq!(w.run(&me, u(i)).unwrap().kick, None);
    assert!(!w.masked(1, i));
    // Masked, pending, selector already set: no new upcall.
    w.mask(1, i);
    w.dm(1).shared.evtchn_pending[0] |= 1 << i.0;
    w.dm(1).shared.vcpu_info[1].evtchn_pending_sel = 1;
    assert_eq!(w.run(&me, u(i)).unwrap().kick, None);
    // A valid but free port: success, mask untouched.
    w.mask(1, p(40));
    assert_eq!(w.run(&me, u(p(40))).unwrap().kick, None);
    assert!(w.masked(1, p(40)));
    // An invalid port.
    assert_eq!(
        w.run(&me, u(p(64))).map_err(Errno::from),
        Err(Errno::EINVAL)
    );
}

// ---------------------------------------------------------------- VIRQs

#[test]
fn bind_virq_rules() {
    let mut w = world();
    let t = w.table(1);
    let any = GlobalVirqPolicy::Any;
    let e = |r: Result<EvtchnBindVirq, EvtchnError>| r.map(|b| b.port).map_err(Errno::from);
    let timer = Virq::Timer as u32;
    let console = Virq::Console as u32;
    assert_eq!(e(t.bind_virq(virq(24, 0), any)), Err(Errno::EINVAL));
    assert_eq!(e(t.bind_virq(virq(u32::MAX, 0), any)), Err(Errno::EINVAL));
    assert_eq!(e(t.bind_virq(virq(console, 1), any)), Err(Errno::EINVAL));
    // Global on a missing vCPU is EINVAL first (vCPU must be 0).
    assert_eq!(e(t.bind_virq(virq(console, 7), any)), Err(Errno::EINVAL));
    assert_eq!(e(t.bind_virq(virq(timer, 2), any)), Err(Errno::ENOENT));
    let t0 = e(t.bind_virq(virq(timer, 0), any)).unwrap();
    let t1 = e(t.bind_virq(virq(timer, 1), any)).unwrap();
    assert_ne!(t0, t1);
    assert_eq!(e(t.bind_virq(virq(timer, 1), any)), Err(Errno::EEXIST));
    assert_eq!(t.notify_vcpu(t1), Some(VcpuId(1)));
    // Only the handler may bind a global VIRQ under the newer rule.
    assert_eq!(
        e(t.bind_virq(virq(console, 0), GlobalVirqPolicy::HandlerOnly(0))),
        Err(Errno::EBUSY)
    );
    let c = e(t.bind_virq(
        virq(console, 0),
        GlobalVirqPolicy::HandlerOnly(1 << console),
    ))
    .unwrap();
    assert_eq!(e(t.bind_virq(virq(console, 0), any)), Err(Errno::EEXIST));
    // Unnamed numbers below NR_VIRQS are global, as in Xen.
    assert!(e(t.bind_virq(virq(5, 0), any)).is_ok());
    // Per-vCPU VIRQs stay put; global ones move.
    assert_eq!(
        t.bind_vcpu(EvtchnBindVcpu {
            port: t1,
            vcpu: VcpuId(0)
        })
        .map_err(Errno::from),
        Err(Errno::EINVAL)
    );
    t.bind_vcpu(EvtchnBindVcpu {
        port: c,
        vcpu: VcpuId(1),
    })
    .unwrap();
    assert_eq!(t.virq_port(console, VcpuId(0)), Some(c));
    // Close forgets the binding; the VIRQ can be bound again.
    w.close(1, t1).unwrap();
    w.close(1, c).unwrap();
    let t = w.table(1);
    assert_eq!(t.virq_port(timer, VcpuId(1)), None);
    assert_eq!(t.virq_port(console, VcpuId(0)), None);
    assert!(e(t.bind_virq(virq(timer, 1), any)).is_ok());
    assert!(e(t.bind_virq(virq(console, 0), any)).is_ok());
}

#[test]
fn raise_virq_delivers_per_vcpu_and_global() {
    let mut w = world();
    let d = w.dm(1);
    let any = GlobalVirqPolicy::Any;
    let timer = Virq::Timer as u32;
    let exc = Virq::DomExc as u32;
    assert_eq!(d.table.raise_virq(&mut *d.shared, timer, VcpuId(1)), None);
    let t1 = d.table.bind_virq(virq(timer, 1), any).unwrap().port;
    let k = d
        .table
        .raise_virq(&mut *d.shared, timer, VcpuId(1))
        .unwrap();
    assert_eq!((k.port, k.upcall), (t1, Some(VcpuId(1))));
    assert_eq!(d.table.raise_virq(&mut *d.shared, timer, VcpuId(0)), None);
    assert_eq!(d.table.raise_virq(&mut *d.shared, timer, VcpuId(9)), None);
    assert_eq!(d.table.raise_virq(&mut *d.shared, 99, VcpuId(0)), None);
    let g = d.table.bind_virq(virq(exc, 0), any).unwrap().port;
    d.table
        .bind_vcpu(EvtchnBindVcpu {
            port: g,
            vcpu: VcpuId(1),
        })
        .unwrap();
    d.shared.vcpu_info[1].evtchn_upcall_pending = 0;
    d.shared.vcpu_info[1].evtchn_pending_sel = 0;
    // vCPU argument ignored: goes where the port was moved.
    let k = d.table.raise_virq(&mut *d.shared, exc, VcpuId(0)).unwrap();
    assert_eq!((k.port, k.upcall), (g, Some(VcpuId(1))));
}

#[test]
fn global_virq_handlers() {
    let mut h = GlobalVirqHandlers::default();
    let hw = DomId(0);
    assert_eq!(h.handler(Virq::Console as u32, hw), Some(hw));
    assert_eq!(h.handler(Virq::Timer as u32, hw), None);
    assert_eq!(
        h.set(Virq::Timer as u32, DomId(3)).map_err(Errno::from),
        Err(Errno::EINVAL)
    );
    assert_eq!(h.set(30, DomId(3)).map_err(Errno::from), Err(Errno::EINVAL));
    h.set(Virq::Console as u32, DomId(3)).unwrap();
    assert_eq!(h.handler(Virq::Console as u32, hw), Some(DomId(3)));
    assert_eq!(h.handled_by(DomId(3), hw), 1 << Virq::Console as u32);
    assert_eq!(h.handled_by(hw, hw) & (1 << Virq::Console as u32), 0);
    assert_ne!(h.handled_by(hw, hw) & (1 << Virq::DomExc as u32), 0);
    h.clear_domain(DomId(3));
    assert_eq!(h.handler(Virq::Console as u32, hw), Some(hw));
    assert!(virq_is_global(Virq::Arch0 as u32));
    assert!(!virq_is_global(Virq::Xenpmu as u32));
}

// ---------------------------------------------------------------- close, bind_vcpu, pirq

#[test]
fn close_refusals() {
    let mut w = world();
    assert_eq!(w.close(1, p(0)), Err(Errno::EINVAL));
    assert_eq!(w.close(1, p(8)), Err(Errno::EINVAL));
    assert_eq!(w.close(1, p(100)), Err(Errno::EINVAL));
    assert_eq!(w.close(9, p(1)), Err(Errno::ESRCH));
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    w.close(1, a).unwrap();
    assert_eq!(w.close(1, a), Err(Errno::EINVAL));
}

#[test]
fn bind_vcpu_rules() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    let t = w.table(1);
    let bv = |port, vcpu| EvtchnBindVcpu {
        port,
        vcpu: VcpuId(vcpu),
    };
    // ENOENT is checked before the port.
    assert_eq!(
        t.bind_vcpu(bv(p(999), 5)).map_err(Errno::from),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        t.bind_vcpu(bv(p(999), 1)).map_err(Errno::from),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        t.bind_vcpu(bv(p(9), 1)).map_err(Errno::from),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        t.bind_vcpu(bv(p(0), 1)).map_err(Errno::from),
        Err(Errno::EINVAL)
    );
    t.bind_vcpu(bv(a, 1)).unwrap();
    assert_eq!(t.notify_vcpu(a), Some(VcpuId(1)));
    // Freed ports go back to vCPU 0.
    w.close(1, a).unwrap();
    assert_eq!(w.d(1).table.notify_vcpu(a), Some(VcpuId(0)));
}

#[test]
fn bind_pirq_rules() {
    let mut w = world();
    let mut c = Caller::domu(DomId(1));
    let bp = |pirq| EvtchnBindPirq {
        pirq,
        flags: 0,
        port: p(0),
    };
    let e = |r: Result<EvtchnReply, EvtchnError>| r.map_err(Errno::from);
    assert_eq!(
        e(w.run(&c, EvtchnRequest::BindPirq(bp(3)))),
        Err(Errno::EINVAL)
    );
    c.pirqs.nr_pirqs = 16;
    assert_eq!(
        e(w.run(&c, EvtchnRequest::BindPirq(bp(3)))),
        Err(Errno::EPERM)
    );
    assert_eq!(
        e(w.run(&c, EvtchnRequest::BindPirq(bp(16)))),
        Err(Errno::EINVAL)
    );
    c.pirqs.permitted = true;
    let r = w.run(&c, EvtchnRequest::BindPirq(bp(3))).unwrap();
    let Some(EvtchnOut::BindPirq(out)) = r.out else {
        panic!("{r:?}")
    };
    assert_eq!(
        e(w.run(&c, EvtchnRequest::BindPirq(bp(3)))),
        Err(Errno::EEXIST)
    );
    assert_eq!(w.send(1, out.port), Err(Errno::EINVAL));
    let d = w.dm(1);
    let k = d.table.raise_pirq(&mut *d.shared, 3).unwrap();
    assert_eq!(k.port, out.port);
    assert_eq!(d.table.raise_pirq(&mut *d.shared, 4), None);
    d.table
        .bind_vcpu(EvtchnBindVcpu {
            port: out.port,
            vcpu: VcpuId(1),
        })
        .unwrap();
    w.close(1, out.port).unwrap();
    assert!(w.run(&c, EvtchnRequest::BindPirq(bp(3))).is_ok());
}

// ---------------------------------------------------------------- reset, destroy

#[test]
fn reset_closes_everything_and_peers_revert() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    let b = w.bind(2, 1, a).unwrap();
    w.table(1)
        .bind_virq(virq(Virq::Timer as u32, 0), GlobalVirqPolicy::Any)
        .unwrap();
    let r = |dom| EvtchnReset { dom };
    let one = Caller::domu(DomId(1));
    let e = |x: Result<(), EvtchnError>| x.map_err(Errno::from);
    assert_eq!(
        e(reset(&mut w, &one, r(DomId(9)), false)),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        e(reset(&mut w, &one, r(DomId(2)), false)),
        Err(Errno::EPERM)
    );
    assert_eq!(
        e(reset(&mut w, &priv_caller(0), r(DomId(2)), false)),
        Err(Errno::EINVAL),
        "not paused"
    );
    assert_eq!(
        e(reset(&mut w, &one, r(DomId::SELF), true)),
        Err(Errno::EBUSY)
    );
    e(reset(&mut w, &one, r(DomId::SELF), false)).unwrap();
    assert_eq!(w.d(1).table.ports().count(), 0);
    assert_eq!(w.d(1).table.virq_port(Virq::Timer as u32, VcpuId(0)), None);
    assert_eq!(w.state(1, p(0)), Some(PortState::Reserved));
    assert_eq!(w.state(2, b), Some(PortState::Unbound { remote: DomId(1) }));
    // A paused domain can be reset by its controller; via dispatch.
    w.dm(2).paused = true;
    let _ = w
        .run(&priv_caller(0), EvtchnRequest::Reset(r(DomId(2))))
        .unwrap();
    assert_eq!(w.d(2).table.ports().count(), 0);
    assert_eq!(
        w.run(&priv_caller(0), EvtchnRequest::ResetCont(r(DomId(2))))
            .map_err(Errno::from),
        Err(Errno::EBUSY)
    );
    // Still usable after reset.
    assert!(w.alloc(1, DomId::SELF, DomId(2)).is_ok());
}

#[test]
fn destroy_closes_all_and_peers_see_unbound() {
    let mut w = world();
    let a = w.alloc(1, DomId::SELF, DomId(2)).unwrap();
    let b = w.bind(2, 1, a).unwrap();
    let c = w.alloc(0, DomId::SELF, DomId(1)).unwrap();
    let d = w.bind(1, 0, c).unwrap();
    let l = w.alloc(1, DomId::SELF, DomId::SELF).unwrap();
    w.bind(1, 1, l).unwrap();
    destroy_domain(&mut w, DomId(1));
    assert!(w.d(1).table.is_dying());
    assert_eq!(w.d(1).table.ports().count(), 0);
    assert_eq!(w.state(2, b), Some(PortState::Unbound { remote: DomId(1) }));
    assert_eq!(w.state(0, c), Some(PortState::Unbound { remote: DomId(1) }));
    let _ = d;
    assert_eq!(w.alloc(1, DomId::SELF, DomId(2)), Err(Errno::EINVAL));
    assert_eq!(w.alloc(0, DomId(1), DomId(2)), Err(Errno::EINVAL));
    // The peers' sends are now dropped; they can close their ends.
    assert_eq!(w.send(2, b), Ok(None));
    w.close(2, b).unwrap();
    // Then the slot goes away.
    w.doms[1] = None;
    assert_eq!(w.send(0, c), Ok(None));
    destroy_domain(&mut w, DomId(1)); // no such domain: nothing
}

// ---------------------------------------------------------------- FIFO, decode, errno

#[test]
fn fifo_ops_are_refused_as_a_two_level_only_xen() {
    let mut w = world();
    let me = Caller::domu(DomId(1));
    let e = |r: Result<EvtchnReply, EvtchnError>| r.map_err(Errno::from);
    let ic = |control_gfn, offset, vcpu| {
        EvtchnRequest::InitControl(EvtchnInitControl {
            control_gfn,
            offset,
            vcpu: VcpuId(vcpu),
            ..Default::default()
        })
    };
    // vCPU (the domain has two), then the offset's bound, then its alignment; what
    // passes is handed on with its frame for the hypercall layer to check.
    assert_eq!(
        w.run(&me, ic(7, 4095, 2)),
        Err(EvtchnError::NoSuchVcpu(VcpuId(2)))
    );
    assert_eq!(
        w.run(&me, ic(7, 4095, 1)),
        Err(EvtchnError::FifoControlOffset(4095))
    );
    assert_eq!(
        w.run(&me, ic(7, fifo::MAX_CONTROL_OFFSET + 8, 1)),
        Err(EvtchnError::FifoControlOffset(4032))
    );
    assert_eq!(
        w.run(&me, ic(7, 4020, 1)),
        Err(EvtchnError::FifoControlMisaligned(4020))
    );
    assert_eq!(
        w.run(&me, ic(7, fifo::MAX_CONTROL_OFFSET, 1)),
        Err(EvtchnError::FifoFrameUnchecked(7))
    );
    assert_eq!(
        w.run(&me, ic(u64::MAX, 0, 0)),
        Err(EvtchnError::FifoFrameUnchecked(u64::MAX))
    );
    assert_eq!(
        e(w.run(&me, ic(7, 0, 0))),
        Err(Errno::EOPNOTSUPP),
        "unchecked, it still reads as the refusal"
    );
    assert_eq!(
        fifo::finish_init_control(7, true),
        EvtchnError::FifoUnsupported
    );
    assert_eq!(
        Errno::from(fifo::finish_init_control(7, false)),
        Errno::EINVAL
    );
    let nobody = Caller::domu(DomId(9));
    assert_eq!(
        w.run(&nobody, ic(7, 0, 0)),
        Err(EvtchnError::NoSuchDomain(DomId(9)))
    );
    assert_eq!(
        e(w.run(
            &me,
            EvtchnRequest::ExpandArray(EvtchnExpandArray::default())
        )),
        Err(Errno::EOPNOTSUPP)
    );
    let sp = |port| EvtchnRequest::SetPriority(EvtchnSetPriority { port, priority: 3 });
    assert_eq!(e(w.run(&me, sp(p(1)))), Err(Errno::ENOSYS));
    assert_eq!(e(w.run(&me, sp(p(64)))), Err(Errno::EINVAL));
}

#[test]
fn decode_native_and_compat() {
    for d in EvtchnOp::ALL {
        assert_eq!(EvtchnRequest::arg_size(d.nr), Some(d.arg_size));
        let bytes = vec![0u8; d.arg_size];
        assert!(EvtchnRequest::decode(d.nr, &bytes).is_ok());
        assert_eq!(
            EvtchnRequest::decode(d.nr, &bytes[..d.arg_size - 1]).map_err(Errno::from),
            Err(Errno::EFAULT)
        );
    }
    assert_eq!(EvtchnRequest::arg_size(15), None);
    assert_eq!(
        EvtchnRequest::decode(15, &[0; 32]).map_err(Errno::from),
        Err(Errno::ENOSYS)
    );
    let send = EvtchnSend { port: p(7) };
    assert_eq!(
        EvtchnRequest::decode(EvtchnOp::Send.nr(), send.as_bytes()),
        Ok(EvtchnRequest::Send(send))
    );

    // Legacy op: alloc_unbound through the union, answer written back into it.
    let mut w = world();
    let mut op = EvtchnOpCompat {
        cmd: EvtchnOp::AllocUnbound.nr(),
        ..Default::default()
    };
    let req = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: DomId(2),
        port: p(0),
    };
    op.u.as_mut_bytes()[..8].copy_from_slice(req.as_bytes());
    let decoded = EvtchnRequest::decode_compat(&op).unwrap();
    let reply = w.run(&Caller::domu(DomId(1)), decoded).unwrap();
    let out = reply.out.unwrap();
    assert_eq!(out.as_bytes().len(), 8);
    out.write_compat(&mut op);
    assert_eq!(op.u[1], 1, "port at union offset 4");
    assert_eq!(op.cmd, EvtchnOp::AllocUnbound.nr());
    // Ops newer than the compat call are ENOSYS there.
    for cmd in [10, 11, 12, 13, 14, 99] {
        let op = EvtchnOpCompat {
            cmd,
            ..Default::default()
        };
        assert_eq!(
            EvtchnRequest::decode_compat(&op).map_err(Errno::from),
            Err(Errno::ENOSYS)
        );
    }
}

#[test]
fn dispatch_returns_out_structs_for_the_ops_xen_copies_back() {
    let mut w = world();
    let me = Caller::domu(DomId(1));
    let r = w
        .run(&me, EvtchnRequest::BindVirq(virq(Virq::Timer as u32, 0)))
        .unwrap();
    assert!(matches!(r.out, Some(EvtchnOut::BindVirq(b)) if b.port == p(1)));
    let r = w
        .run(
            &me,
            EvtchnRequest::BindIpi(EvtchnBindIpi {
                vcpu: VcpuId(0),
                port: p(0),
            }),
        )
        .unwrap();
    assert!(matches!(r.out, Some(EvtchnOut::BindIpi(b)) if b.port == p(2)));
    let r = w
        .run(&me, EvtchnRequest::Send(EvtchnSend { port: p(2) }))
        .unwrap();
    assert_eq!((r.out, r.kick.map(|k| k.port)), (None, Some(p(2))));
    let r = w
        .run(
            &me,
            EvtchnRequest::Status(EvtchnStatus {
                dom: DomId::SELF,
                port: p(2),
                ..Default::default()
            }),
        )
        .unwrap();
    assert!(matches!(r.out, Some(EvtchnOut::Status(s)) if s.status == 5));
    let a = w.alloc(2, DomId::SELF, DomId(1)).unwrap();
    let r = w
        .run(
            &me,
            EvtchnRequest::BindInterdomain(EvtchnBindInterdomain {
                remote_dom: DomId(2),
                _pad: 0,
                remote_port: a,
                local_port: p(0),
            }),
        )
        .unwrap();
    assert!(matches!(r.out, Some(EvtchnOut::BindInterdomain(b)) if b.local_port == p(3)));
    assert!(r.kick.is_some());
    let r = w
        .run(
            &me,
            EvtchnRequest::BindVcpu(EvtchnBindVcpu {
                port: p(3),
                vcpu: VcpuId(1),
            }),
        )
        .unwrap();
    assert_eq!(r, EvtchnReply::default());
    let r = w
        .run(&me, EvtchnRequest::Close(EvtchnClose { port: p(3) }))
        .unwrap();
    assert_eq!(r, EvtchnReply::default());
    // A caller that is not a domain.
    assert_eq!(
        w.run(
            &Caller::domu(DomId(8)),
            EvtchnRequest::BindIpi(EvtchnBindIpi::default())
        )
        .map_err(Errno::from),
        Err(Errno::ESRCH)
    );
}

#[test]
fn errno_of_every_error() {
    use EvtchnError::*;
    let cases = [
        (NoSuchDomain(DomId(1)), Errno::ESRCH),
        (InvalidPort(p(1)), Errno::EINVAL),
        (WrongState(p(1), PortState::Free), Errno::EINVAL),
        (NotBindable(DomId(1), p(1)), Errno::EINVAL),
        (InvalidVirq(99), Errno::EINVAL),
        (GlobalVirqVcpu(VcpuId(1)), Errno::EINVAL),
        (NoSuchVcpu(VcpuId(1)), Errno::ENOENT),
        (VirqBound(0, p(1)), Errno::EEXIST),
        (NotVirqHandler(2), Errno::EBUSY),
        (NoFreePort, Errno::ENOSPC),
        (Dying(DomId(1)), Errno::EINVAL),
        (NotPermitted(DomId(1)), Errno::EPERM),
        (NotPaused(DomId(1)), Errno::EINVAL),
        (NoResetInProgress, Errno::EBUSY),
        (FifoUnsupported, Errno::EOPNOTSUPP),
        (FifoFrameUnchecked(1), Errno::EOPNOTSUPP),
        (FifoControlOffset(4032), Errno::EINVAL),
        (FifoControlMisaligned(4), Errno::EINVAL),
        (FifoControlFrame(1), Errno::EINVAL),
        (NoPriorities, Errno::ENOSYS),
        (UnknownOp(20), Errno::ENOSYS),
        (TooManyPollPorts(129), Errno::EINVAL),
        (InvalidPirq(1), Errno::EINVAL),
        (PirqNotPermitted(1), Errno::EPERM),
        (PirqBound(1), Errno::EEXIST),
        (ShortArgument, Errno::EFAULT),
        (BrokenLink(DomId(1), p(1)), Errno::EINVAL),
    ];
    for (e, errno) in cases {
        assert_eq!(Errno::from(e), errno, "{e:?}");
        assert!(!format!("{e}").is_empty());
    }
}

// ---------------------------------------------------------------- poll

#[test]
fn poll_check() {
    let mut w = world();
    let i = w
        .table(1)
        .bind_ipi(EvtchnBindIpi {
            vcpu: VcpuId(1),
            port: p(0),
        })
        .unwrap()
        .port;
    let j = w
        .table(1)
        .bind_ipi(EvtchnBindIpi {
            vcpu: VcpuId(1),
            port: p(0),
        })
        .unwrap()
        .port;
    let e = |r: Result<bool, EvtchnError>| r.map_err(Errno::from);
    let d = w.d(1);
    let v0 = VcpuId(0);
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[i, j])), Ok(false));
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[])), Ok(false));
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[i, p(64)])),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[p(9)])),
        Err(Errno::EINVAL),
        "free"
    );
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[p(0)])),
        Err(Errno::EINVAL),
        "reserved"
    );
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[i; 129])),
        Err(Errno::EINVAL)
    );
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[i; 128])), Ok(false));
    assert!(EvtchnTable::check_poll_count(129).is_err());
    // Masked events still satisfy a poll.
    w.mask(1, j);
    let k = w.send(1, j).unwrap().unwrap();
    assert!(k.pollers);
    let d = w.d(1);
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[i, j])), Ok(true));
    // A pending port before a bad one wins; after it, the error does.
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[j, p(9)])), Ok(true));
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[p(9), j])),
        Err(Errno::EINVAL)
    );
    // Events needing delivery to the polling vCPU: return at once.
    w.dm(1).shared.vcpu_info[0].evtchn_upcall_mask = 1;
    w.dm(1).shared.vcpu_info[0].evtchn_upcall_pending = 1;
    let d = w.d(1);
    assert_eq!(
        e(d.table.poll(&*d.shared, v0, &[p(9)])),
        Err(Errno::EINVAL),
        "masked upcall"
    );
    w.dm(1).shared.vcpu_info[0].evtchn_upcall_mask = 0;
    let d = w.d(1);
    assert_eq!(e(d.table.poll(&*d.shared, v0, &[p(9)])), Ok(true));
}

#[test]
fn pair_mut_gives_distinct_elements() {
    let mut v = [1, 2, 3];
    let (a, b) = pair_mut(&mut v, 2, 0).unwrap();
    assert_eq!((*a, *b), (3, 1));
    let (a, b) = pair_mut(&mut v, 0, 1).unwrap();
    core::mem::swap(a, b);
    assert_eq!(v, [2, 1, 3]);
    assert!(pair_mut(&mut v, 1, 1).is_none());
    assert!(pair_mut(&mut v, 1, 3).is_none());
}
