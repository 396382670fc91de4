//! Loopback: typed guest wrappers -> `Invoke` -> `dispatch` -> a fake
//! hypervisor handler. Checks the register images each wrapper produces,
//! how `dispatch` decodes them, and that errors round-trip through errno.

use std::vec::Vec;

use hypercall_abi::evtchn::EvtchnOpCompat;
use hypercall_abi::hypercall::{self, HYPERCALLS, HypercallArg, Invoke, Loopback, call};
use hypercall_abi::mmu::{MmuUpdate, MmuextOp};
use hypercall_abi::physdev::PhysdevOpCompat;
use hypercall_abi::xen::{MulticallEntry, TrapInfo};
use hypercall_abi::{DomId, Errno, GuestPtr, HypercallHandler, MachineAddr, Mfn, VcpuId, dispatch};

/// The hypervisor's rich error type, as a real handler would have.
#[derive(Debug, PartialEq)]
enum HvError {
    NoSuchDomain,
    BadFlags,
    Raw(Errno),
}

impl From<Errno> for HvError {
    fn from(e: Errno) -> Self {
        HvError::Raw(e)
    }
}

impl From<HvError> for Errno {
    fn from(e: HvError) -> Errno {
        match e {
            HvError::NoSuchDomain => Errno::ESRCH,
            HvError::BadFlags => Errno::EINVAL,
            HvError::Raw(e) => e,
        }
    }
}

/// Records every call as (name, argument images re-encoded from the typed
/// values it received), and answers with `next`.
#[derive(Default)]
struct Recorder {
    calls: Vec<(&'static str, Vec<u64>)>,
    next: Option<Result<u64, HvError>>,
    multicall_list: Vec<MulticallEntry>,
}

impl Recorder {
    fn answer(&mut self, name: &'static str, images: Vec<u64>) -> Result<u64, HvError> {
        self.calls.push((name, images));
        self.next.take().unwrap_or(Ok(0))
    }
}

/// Implement a handler method that records its typed arguments.
macro_rules! rec {
    ($( $name:ident($($arg:ident: $ty:ty),*); )*) => {
        $(
            fn $name(&mut self $(, $arg: $ty)*) -> Result<u64, HvError> {
                self.answer(stringify!($name), vec![$(HypercallArg::to_reg($arg)),*])
            }
        )*
    };
}

impl HypercallHandler for Recorder {
    type Error = HvError;

    rec! {
        set_trap_table(traps: GuestPtr<TrapInfo>);
        mmu_update(reqs: GuestPtr<MmuUpdate>, count: u32, pdone: GuestPtr<u32>, foreigndom: u32);
        set_gdt(frame_list: GuestPtr<Mfn>, entries: u32);
        stack_switch(ss: u64, sp: u64);
        set_callbacks(event_address: u64, failsafe_address: u64, syscall_address: u64);
        fpu_taskswitch(set: i32);
        sched_op_compat(cmd: u32, arg: u64);
        platform_op(op: GuestPtr<()>);
        set_debugreg(reg: i32, value: u64);
        get_debugreg(reg: i32);
        update_descriptor(ma: MachineAddr, desc: u64);
        memory_op(cmd: u64, arg: GuestPtr<()>);
        update_va_mapping(va: u64, val: u64, flags: u64);
        set_timer_op(timeout: i64);
        event_channel_op_compat(op: GuestPtr<EvtchnOpCompat>);
        xen_version(cmd: u32, arg: GuestPtr<()>);
        console_io(cmd: u32, count: u32, buffer: GuestPtr<u8>);
        physdev_op_compat(op: GuestPtr<PhysdevOpCompat>);
        grant_table_op(cmd: u32, uop: GuestPtr<()>, count: u32);
        vm_assist(cmd: u32, vmasst_type: u32);
        update_va_mapping_otherdomain(va: u64, val: u64, flags: u64, domid: DomId);
        iret();
        vcpu_op(cmd: u32, vcpuid: VcpuId, arg: GuestPtr<()>);
        set_segment_base(which: u32, base: u64);
        mmuext_op(ops: GuestPtr<MmuextOp>, count: u32, pdone: GuestPtr<u32>, foreigndom: u32);
        xsm_op(op: GuestPtr<()>);
        nmi_op(cmd: u32, arg: GuestPtr<()>);
        sched_op(cmd: u32, arg: GuestPtr<()>);
        callback_op(cmd: u32, arg: GuestPtr<()>);
        xenoprof_op(op: u32, arg: GuestPtr<()>);
        event_channel_op(cmd: u32, arg: GuestPtr<()>);
        physdev_op(cmd: u32, arg: GuestPtr<()>);
        hvm_op(op: u64, arg: GuestPtr<()>);
        sysctl(op: GuestPtr<()>);
        domctl(op: GuestPtr<()>);
        kexec_op(op: u64, arg: GuestPtr<()>);
        tmem_op(op: GuestPtr<()>);
        argo_op(cmd: u32, arg1: GuestPtr<()>, arg2: GuestPtr<()>, arg3: u64, arg4: u64);
        xenpmu_op(op: u32, arg: GuestPtr<()>);
        dm_op(domid: DomId, nr_bufs: u32, bufs: GuestPtr<()>);
        hypfs_op(cmd: u32, arg1: GuestPtr<u8>, arg2: u64, arg3: GuestPtr<()>, arg4: u64);
        mca(op: GuestPtr<()>);
        paging_domctl_cont(op: GuestPtr<()>);
    }

    /// A real multicall: run each entry through `dispatch`, store results.
    fn multicall(
        &mut self,
        call_list: GuestPtr<MulticallEntry>,
        nr_calls: u32,
    ) -> Result<u64, HvError> {
        self.calls
            .push(("multicall", vec![call_list.addr(), u64::from(nr_calls)]));
        let mut list = std::mem::take(&mut self.multicall_list);
        for e in list.iter_mut().take(nr_calls as usize) {
            e.result = dispatch(self, e.op, e.regs());
        }
        self.multicall_list = list;
        Ok(0)
    }
}

/// Records the raw images on their way into dispatch.
struct Tap {
    inner: Loopback<Recorder>,
    raw: Vec<(u64, [u64; 5])>,
}

impl Invoke for Tap {
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64 {
        self.raw.push((nr, args));
        self.inner.invoke(nr, args)
    }
}

fn tap() -> Tap {
    Tap {
        inner: Loopback::default(),
        raw: Vec::new(),
    }
}

#[test]
fn every_row_reaches_its_own_method() {
    let args = [0x1111, 0x2222, 0x3333, 0x4444, 0x5555];
    for d in HYPERCALLS {
        let mut h = Recorder::default();
        let rax = dispatch(&mut h, u64::from(d.nr), args);
        assert_eq!(rax, 0, "{}", d.name);
        let (name, images) = h.calls.pop().unwrap();
        assert_eq!(name, d.name, "nr {}", d.nr);
        assert_eq!(images, &args[..d.args.len()], "{}: argument order", d.name);
    }
}

#[test]
fn wrappers_load_registers_in_order() {
    let mut t = tap();
    let r = hypercall::mmu_update(
        &mut t,
        GuestPtr::new(0x1000),
        3,
        GuestPtr::new(0x2000),
        0x7FF0,
    );
    assert_eq!(r, Ok(0));
    assert_eq!(t.raw[0], (1, [0x1000, 3, 0x2000, 0x7FF0, 0]));
    assert_eq!(
        t.inner.handler.calls[0],
        ("mmu_update", vec![0x1000, 3, 0x2000, 0x7FF0])
    );

    hypercall::argo_op(&mut t, 1, GuestPtr::new(2), GuestPtr::new(3), 4, 5).unwrap();
    assert_eq!(t.raw[1], (39, [1, 2, 3, 4, 5]));

    hypercall::vcpu_op(&mut t, 8, VcpuId(2), GuestPtr::new(0x3000)).unwrap();
    assert_eq!(t.raw[2], (24, [8, 2, 0x3000, 0, 0]));

    hypercall::iret(&mut t).unwrap();
    assert_eq!(t.raw[3], (23, [0; 5]));
    assert_eq!(t.inner.handler.calls[3], ("iret", vec![]));
}

#[test]
fn registers_decode_like_c_parameters() {
    let mut h = Recorder::default();
    // `unsigned int count`: the upper half of the register is ignored.
    dispatch(
        &mut h,
        1,
        [0x1000, 0xFFFF_FFFF_0000_0005, 0, 0x1_0000_7FF0, 0],
    );
    assert_eq!(h.calls[0].1, vec![0x1000, 5, 0, 0x7FF0]);
    // `domid_t domid`: the low 16 bits.
    dispatch(&mut h, 22, [1, 2, 3, 0xABCD_0007, 0]);
    assert_eq!(h.calls[1].1, vec![1, 2, 3, 7]);
    // `int set`: sign-extended back to the same image.
    let mut t = tap();
    hypercall::fpu_taskswitch(&mut t, -1).unwrap();
    assert_eq!(t.raw[0].1[0], u64::MAX);
    assert_eq!(t.inner.handler.calls[0].1, vec![u64::MAX]);
    hypercall::set_timer_op(&mut t, -5).unwrap();
    assert_eq!(t.raw[1].1[0], 0u64.wrapping_sub(5));
}

#[test]
fn errors_round_trip_through_errno() {
    let mut t = tap();
    t.inner.handler.next = Some(Err(HvError::NoSuchDomain));
    assert_eq!(
        hypercall::xen_version(&mut t, 0, GuestPtr::NULL),
        Err(Errno::ESRCH)
    );
    assert_eq!(t.raw.len(), 1);

    t.inner.handler.next = Some(Err(HvError::BadFlags));
    let r = hypercall::update_va_mapping(&mut t, 0x1000, 0, 2);
    assert_eq!(r, Err(Errno::EINVAL));

    t.inner.handler.next = Some(Err(HvError::Raw(Errno::EFAULT)));
    assert_eq!(
        hypercall::console_io(&mut t, 0, 5, GuestPtr::new(8)),
        Err(Errno::EFAULT)
    );

    let odd = Errno::new(4000).unwrap();
    t.inner.handler.next = Some(Err(HvError::Raw(odd)));
    let e = hypercall::sched_op(&mut t, 0, GuestPtr::NULL).unwrap_err();
    assert_eq!((e.get(), e.name()), (4000, None));

    // Large successful values are not errors.
    t.inner.handler.next = Some(Ok(0xFFFF_8000_0000_1000));
    assert_eq!(
        hypercall::get_debugreg(&mut t, 0),
        Ok(0xFFFF_8000_0000_1000)
    );
    t.inner.handler.next = Some(Ok(0x4_0011));
    assert_eq!(
        hypercall::xen_version(&mut t, 0, GuestPtr::NULL),
        Ok(0x4_0011)
    );
}

#[test]
fn unwired_and_unknown_answer_enosys() {
    struct OnlyVersion;
    impl HypercallHandler for OnlyVersion {
        type Error = Errno;
        fn xen_version(&mut self, _cmd: u32, _arg: GuestPtr<()>) -> Result<u64, Errno> {
            Ok(0x4_0011)
        }
    }
    let mut lb = Loopback {
        handler: OnlyVersion,
    };
    assert_eq!(
        hypercall::xen_version(&mut lb, 0, GuestPtr::NULL),
        Ok(0x4_0011)
    );
    assert_eq!(
        hypercall::sched_op(&mut lb, 0, GuestPtr::NULL),
        Err(Errno::ENOSYS)
    );
    assert_eq!(Errno::decode(lb.invoke(11, [0; 5])), Err(Errno::ENOSYS));
    assert_eq!(Errno::decode(lb.invoke(64, [0; 5])), Err(Errno::ENOSYS));
}

#[test]
fn multicall_dispatches_each_entry() {
    let mut t = tap();
    t.inner.handler.multicall_list = vec![
        MulticallEntry::new(call::update_va_mapping(0x1000, 0x23, 2)),
        MulticallEntry::new(call::xen_version(0, GuestPtr::NULL)),
        MulticallEntry {
            op: 11,
            ..Default::default()
        },
    ];
    hypercall::multicall(&mut t, GuestPtr::new(0x5000), 3).unwrap();
    let h = &t.inner.handler;
    assert_eq!(h.calls[1], ("update_va_mapping", vec![0x1000, 0x23, 2]));
    assert_eq!(h.calls[2], ("xen_version", vec![0, 0]));
    let results: Vec<_> = h
        .multicall_list
        .iter()
        .map(|e| Errno::decode(e.result))
        .collect();
    assert_eq!(results, [Ok(0), Ok(0), Err(Errno::ENOSYS)]);
}
