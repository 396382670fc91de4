//! Random op sequences over three domains (plus a missing one): no panic, links stay
//! symmetric, VIRQ bindings stay consistent, the §7.3 selector/upcall invariants hold,
//! and events only ever appear where the sender is connected.

use super::*;
use hypercall_abi::evtchn::{EVTCHN_2L_NR_CHANNELS, NR_VIRQS};
use proptest::prelude::*;
use std::collections::BTreeSet;

const NR_DOMS: u16 = 3;
const MAX_PORTS: [u32; 3] = [UNLIMITED_MAX_PORT, 70, 12];

#[derive(Clone, Debug)]
enum Act {
    Op(Caller, EvtchnRequest),
    /// The guest sets a mask bit (guests may do this at any time).
    Mask(u16, u32),
    /// The guest runs its upcall handler.
    Handle(u16),
    Raise(u16, u32, u32),
    Destroy(u16),
    Create(u16),
    Pause(u16, bool),
    /// Caller binds to some port of the second domain that is unbound for it.
    Connect(u16, u16, usize),
    /// Caller sends / closes / unmasks / moves / masks one of its bound ports.
    OnBound(u16, usize, u8),
}

fn port() -> impl Strategy<Value = EvtchnPort> {
    prop_oneof![6 => 0u32..12, 3 => 0u32..80, 1 => any::<u32>()].prop_map(EvtchnPort)
}

fn dom() -> impl Strategy<Value = DomId> {
    prop_oneof![12 => 0u16..NR_DOMS, 1 => Just(NR_DOMS), 3 => Just(DomId::SELF.0)].prop_map(DomId)
}

fn vcpu() -> impl Strategy<Value = VcpuId> {
    (0u32..3).prop_map(VcpuId)
}

fn caller() -> impl Strategy<Value = Caller> {
    (
        0u16..NR_DOMS,
        prop_oneof![
            Just(GlobalVirqPolicy::Any),
            any::<u32>().prop_map(GlobalVirqPolicy::HandlerOnly)
        ],
    )
        .prop_map(|(d, g)| Caller {
            global_virqs: g,
            ..priv_caller(d)
        })
}

fn request() -> impl Strategy<Value = EvtchnRequest> {
    prop_oneof![
        5 => (dom(), dom()).prop_map(|(dom, remote_dom)| EvtchnRequest::AllocUnbound(
            EvtchnAllocUnbound { dom, remote_dom, port: EvtchnPort(0) }
        )),
        4 => (dom(), port()).prop_map(|(remote_dom, remote_port)| EvtchnRequest::BindInterdomain(
            EvtchnBindInterdomain { remote_dom, _pad: 0, remote_port, local_port: EvtchnPort(0) }
        )),
        2 => (0u32..26, vcpu()).prop_map(|(virq, vcpu)| EvtchnRequest::BindVirq(
            EvtchnBindVirq { virq, vcpu, port: EvtchnPort(0) }
        )),
        1 => vcpu().prop_map(|vcpu| EvtchnRequest::BindIpi(EvtchnBindIpi { vcpu, port: EvtchnPort(0) })),
        3 => port().prop_map(|port| EvtchnRequest::Close(EvtchnClose { port })),
        5 => port().prop_map(|port| EvtchnRequest::Send(EvtchnSend { port })),
        3 => port().prop_map(|port| EvtchnRequest::Unmask(EvtchnUnmask { port })),
        1 => (dom(), port()).prop_map(|(dom, port)| EvtchnRequest::Status(
            EvtchnStatus { dom, port, ..Default::default() }
        )),
        2 => (port(), vcpu()).prop_map(|(port, vcpu)| EvtchnRequest::BindVcpu(EvtchnBindVcpu { port, vcpu })),
        1 => dom().prop_map(|dom| EvtchnRequest::Reset(EvtchnReset { dom })),
        1 => dom().prop_map(|dom| EvtchnRequest::ResetCont(EvtchnReset { dom })),
        1 => port().prop_map(|port| EvtchnRequest::SetPriority(EvtchnSetPriority { port, priority: 0 })),
        1 => Just(EvtchnRequest::InitControl(EvtchnInitControl::default())),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        20 => (caller(), request()).prop_map(|(c, r)| Act::Op(c, r)),
        3 => (0u16..NR_DOMS, 0u32..80).prop_map(|(d, p)| Act::Mask(d, p)),
        3 => (0u16..NR_DOMS).prop_map(Act::Handle),
        2 => (0u16..NR_DOMS, 0u32..25, 0u32..3).prop_map(|(d, v, c)| Act::Raise(d, v, c)),
        1 => (0u16..NR_DOMS).prop_map(Act::Destroy),
        2 => (0u16..NR_DOMS).prop_map(Act::Create),
        1 => (0u16..NR_DOMS, any::<bool>()).prop_map(|(d, b)| Act::Pause(d, b)),
        6 => (0u16..NR_DOMS, 0u16..NR_DOMS, any::<usize>()).prop_map(|(c, r, i)| Act::Connect(c, r, i)),
        10 => (0u16..NR_DOMS, any::<usize>(), 0u8..6).prop_map(|(c, i, k)| Act::OnBound(c, i, k)),
    ]
}

fn start() -> World {
    World {
        doms: (0..NR_DOMS)
            .map(|i| Some(new_dom(i, MAX_PORTS[usize::from(i)], 2)))
            .chain(core::iter::once(None))
            .collect(),
    }
}

/// All (domain, port) pending bits.
fn pending_set(w: &World) -> BTreeSet<(u16, u32)> {
    let mut s = BTreeSet::new();
    for (i, d) in w.doms.iter().enumerate() {
        let Some(d) = d else { continue };
        for (wi, word) in d.shared.evtchn_pending.iter().enumerate() {
            for b in 0..64 {
                if word & (1 << b) != 0 {
                    s.insert((
                        u16::try_from(i).unwrap(),
                        u32::try_from(wi * 64 + b).unwrap(),
                    ));
                }
            }
        }
    }
    s
}

fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    for (i, d) in w.doms.iter().enumerate() {
        let Some(d) = d else { continue };
        let me = DomId(u16::try_from(i).unwrap());
        let t = &d.table;
        prop_assert_eq!(t.state(EvtchnPort(0)), Some(PortState::Reserved));
        for (port, state) in t.ports() {
            match state {
                // Peer links are symmetric.
                PortState::Interdomain {
                    remote,
                    port: rport,
                } => {
                    let peer = w.doms.get(usize::from(remote.0)).and_then(|x| x.as_ref());
                    prop_assert!(
                        peer.is_some(),
                        "d{} port {} names missing d{}",
                        i,
                        port.0,
                        remote.0
                    );
                    prop_assert_eq!(
                        peer.unwrap().table.state(rport),
                        Some(PortState::Interdomain { remote: me, port })
                    );
                }
                // Every VIRQ port is recorded where close looks for it.
                PortState::Virq { virq } => {
                    let v = if virq_is_global(virq) {
                        VcpuId(0)
                    } else {
                        t.notify_vcpu(port).unwrap()
                    };
                    prop_assert_eq!(t.virq_port(virq, v), Some(port));
                }
                _ => {}
            }
            prop_assert!(t.notify_vcpu(port).unwrap().0 < t.nr_vcpus());
        }
        for v in 0..u32::try_from(MAX_VCPUS).unwrap() {
            for virq in 0..NR_VIRQS {
                if let Some(port) = t.virq_port(virq, VcpuId(v)) {
                    prop_assert_eq!(t.state(port), Some(PortState::Virq { virq }));
                    if virq_is_global(virq) {
                        prop_assert_eq!(v, 0);
                    } else {
                        prop_assert_eq!(t.notify_vcpu(port), Some(VcpuId(v)));
                    }
                }
            }
        }
        // §7.3: a pending unmasked port is announced in some vCPU's selector, and a
        // vCPU with selector bits has its upcall pending.
        let si = &d.shared;
        for port in 0..EVTCHN_2L_NR_CHANNELS {
            let port = EvtchnPort(port);
            if si.is_pending(port) && !si.is_masked(port) {
                let (word, _) = port_word_bit(port);
                prop_assert!(
                    si.vcpu_info
                        .iter()
                        .any(|vi| vi.evtchn_pending_sel & (1 << word) != 0),
                    "d{} port {} pending+unmasked without selector",
                    i,
                    port.0
                );
            }
        }
        for (v, vi) in si.vcpu_info.iter().enumerate() {
            if vi.evtchn_pending_sel != 0 {
                prop_assert_eq!(vi.evtchn_upcall_pending, 1, "d{} vcpu {}", i, v);
            }
        }
    }
    Ok(())
}

/// Ports an action may newly flag pending: `None` = any port of that domain.
fn allowed_new(w: &World, a: &Act, reply: &Option<EvtchnReply>) -> Vec<(u16, Option<u32>)> {
    match a {
        Act::Op(c, EvtchnRequest::Send(s)) => {
            match w.doms[usize::from(c.dom.0)]
                .as_ref()
                .and_then(|d| d.table.state(s.port))
            {
                Some(PortState::Interdomain { remote, port }) => vec![(remote.0, Some(port.0))],
                Some(PortState::Ipi) => vec![(c.dom.0, Some(s.port.0))],
                _ => vec![],
            }
        }
        Act::Op(c, EvtchnRequest::BindInterdomain(_)) => match reply {
            Some(EvtchnReply {
                out: Some(EvtchnOut::BindInterdomain(b)),
                ..
            }) => {
                vec![(c.dom.0, Some(b.local_port.0))]
            }
            _ => vec![],
        },
        Act::Raise(d, ..) => vec![(*d, None)],
        _ => vec![],
    }
}

/// Turns the targeted actions into plain ops on the current state.
fn concretize(w: &World, a: &Act) -> Option<Act> {
    match *a {
        Act::Connect(c, r, i) => {
            let t = &w.doms[usize::from(r)].as_ref()?.table;
            let ports: Vec<_> = t
                .ports()
                .filter(|&(_, s)| s == PortState::Unbound { remote: DomId(c) })
                .collect();
            let (port, _) = *ports.get(i % ports.len().max(1))?;
            let remote_dom = if r == c { DomId::SELF } else { DomId(r) };
            Some(Act::Op(
                Caller::domu(DomId(c)),
                EvtchnRequest::BindInterdomain(EvtchnBindInterdomain {
                    remote_dom,
                    _pad: 0,
                    remote_port: port,
                    local_port: EvtchnPort(0),
                }),
            ))
        }
        Act::OnBound(c, i, k) => {
            let t = &w.doms[usize::from(c)].as_ref()?.table;
            let ports: Vec<_> = t.ports().collect();
            let (port, _) = *ports.get(i % ports.len().max(1))?;
            let req = match k {
                0 => EvtchnRequest::Close(EvtchnClose { port }),
                1 => EvtchnRequest::Unmask(EvtchnUnmask { port }),
                2 => EvtchnRequest::BindVcpu(EvtchnBindVcpu {
                    port,
                    vcpu: VcpuId(u32::try_from(i % 2).unwrap()),
                }),
                4 => return Some(Act::Mask(c, port.0)),
                _ => EvtchnRequest::Send(EvtchnSend { port }),
            };
            Some(Act::Op(Caller::domu(DomId(c)), req))
        }
        _ => Some(a.clone()),
    }
}

fn apply(w: &mut World, a: &Act) -> Result<(), TestCaseError> {
    let Some(a) = concretize(w, a) else {
        return Ok(());
    };
    let a = &a;
    let before = pending_set(w);
    // Evaluate what a send may reach *before* it runs (state does not change on send).
    let mut reply = None;
    let mut kick = None;
    let mut allowed = allowed_new(w, a, &None);
    match a {
        Act::Op(c, req) => {
            match w.run(c, *req) {
                Ok(r) => {
                    reply = Some(r);
                    kick = r.kick;
                }
                Err(e) => {
                    let _ = Errno::from(e);
                }
            }
            if matches!(req, EvtchnRequest::BindInterdomain(_)) {
                allowed = allowed_new(w, a, &reply);
            }
        }
        Act::Mask(d, p) => {
            if w.doms[usize::from(*d)].is_some() {
                w.mask(*d, EvtchnPort(*p));
            }
        }
        Act::Handle(d) => {
            if w.doms[usize::from(*d)].is_some() {
                w.guest_handle(*d);
            }
        }
        Act::Raise(d, v, c) => {
            if let Some(dm) = w.doms[usize::from(*d)].as_mut() {
                kick = dm.table.raise_virq(&mut *dm.shared, *v, VcpuId(*c));
            }
        }
        Act::Destroy(d) => {
            if w.doms[usize::from(*d)].is_some() {
                destroy_domain(w, DomId(*d));
                w.doms[usize::from(*d)] = None;
            }
        }
        Act::Create(d) => {
            if w.doms[usize::from(*d)].is_none() {
                w.doms[usize::from(*d)] = Some(new_dom(*d, MAX_PORTS[usize::from(*d)], 2));
            }
        }
        Act::Pause(d, b) => {
            if let Some(dm) = w.doms[usize::from(*d)].as_mut() {
                dm.paused = *b;
            }
        }
        Act::Connect(..) | Act::OnBound(..) => {}
    }
    // What became pending?
    let after = pending_set(w);
    for (d, p) in after.difference(&before) {
        prop_assert!(
            allowed
                .iter()
                .any(|&(ad, ap)| ad == *d && ap.is_none_or(|ap| ap == *p)),
            "{a:?} flagged d{d} port {p}; allowed {allowed:?}"
        );
    }
    if let Some(k) = kick {
        let d = w.doms[usize::from(k.dom.0)].as_ref();
        prop_assert!(d.is_some());
        let d = d.unwrap();
        prop_assert!(d.shared.is_pending(k.port));
        if let Some(v) = k.upcall {
            prop_assert!(v.0 < d.table.nr_vcpus());
            prop_assert_eq!(d.shared.vcpu_info[v.0 as usize].evtchn_upcall_pending, 1);
        }
    }
    check_invariants(w)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_op_sequences_keep_the_invariants(acts in proptest::collection::vec(act(), 1..120)) {
        let mut w = start();
        // Linux-like start: vCPU 0 and 1 have events enabled.
        for d in w.doms.iter_mut().flatten() {
            for vi in d.shared.vcpu_info.iter_mut() {
                vi.evtchn_upcall_mask = 0;
            }
        }
        for a in &acts {
            apply(&mut w, a)?;
        }
    }
}
