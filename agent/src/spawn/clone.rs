//! Making the child: clone with CLONE_VM | CLONE_VFORK, or clone3 with CLONE_INTO_CGROUP as
//! well, so the child is made in its cgroup. The child runs `child::entry` on a stack of the
//! spawner's while the spawner thread is suspended.

use std::os::fd::{AsRawFd, OwnedFd};

use super::child::{self, ChildArgs};

/// The child's stack between clone and exec: it runs one small function.
pub(super) const CHILD_STACK: usize = 64 * 1024;

/// CLONE_VM | CLONE_VFORK, as posix_spawn does: no copy of the agent's page tables, and this
/// thread waits until the child has exec'd or exited, so the shared memory and stack are the
/// child's alone meanwhile, and the exec's outcome is known on return.
pub(super) fn clone_vfork(stack: &mut [u8], args: &ChildArgs) -> std::io::Result<i32> {
    // The stack grows down from its end, which must be 16-byte aligned.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs only raw system calls on memory prepared before (see `child`)
    // and then execs or exits; `args` and `stack` outlive it since this thread is suspended.
    let pid = unsafe {
        libc::clone(
            child::entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (args as *const ChildArgs).cast_mut().cast(),
        )
    };
    if pid < 0 { Err(std::io::Error::last_os_error()) } else { Ok(pid) }
}

/// Whether clone3 with CLONE_INTO_CGROUP may be tried: cleared the first time the kernel (or
/// a seccomp filter, as container runtimes have) says it does not know it, and at start by
/// `PROCCTL_NO_CLONE_INTO_CGROUP=1` (the children then move themselves, as on older kernels).
pub(super) static CLONE3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// As `clone_vfork`, with the child made directly in the cgroup `dir` (clone3 with
/// CLONE_INTO_CGROUP, Linux 5.7). Moving a process into a cgroup afterwards waits for an RCU
/// grace period in the kernel (about 7 ms here), which would be most of the time of a
/// restart; a child made in its cgroup costs nothing more. `None` when clone3 cannot be
/// used here: the child then moves itself.
pub(super) fn clone_into_cgroup(dir: &OwnedFd, stack: &mut [u8], args: &ChildArgs) -> Option<std::io::Result<i32>> {
    use std::sync::atomic::Ordering;
    if !cfg!(target_arch = "x86_64") || !CLONE3.load(Ordering::Relaxed) {
        return None;
    }
    // clone3 takes the lowest address of the stack and its size, and starts the child at
    // their end: both 16-byte aligned.
    let base = (stack.as_mut_ptr() as usize).next_multiple_of(16);
    let size = (stack.as_mut_ptr() as usize + stack.len() - base) & !15;
    let mut clone = libc::clone_args {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: base as u64,
        stack_size: size as u64,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: dir.as_raw_fd() as u64,
    };
    // SAFETY: as in `clone_vfork`: the child runs `child::entry` on `stack`, with `args`,
    // while this thread is suspended.
    let ret = unsafe { clone3(&mut clone, child::entry, (args as *const ChildArgs).cast_mut().cast()) };
    if ret >= 0 {
        return Some(Ok(ret as i32));
    }
    let error = std::io::Error::from_raw_os_error(-ret as i32);
    match error.raw_os_error() {
        Some(libc::ENOSYS) => {
            CLONE3.store(false, Ordering::Relaxed);
            None
        }
        // An older seccomp profile refuses clone3 this way; a cgroup we may not use fails
        // the same when the child moves itself, and says so.
        Some(libc::EPERM) => None,
        _ => Some(Err(error)),
    }
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3 with a child that calls `entry(arg)` on the stack of `args` and exits with what it
/// returns. No libc wrapper exists: after the system call the child runs on its new stack,
/// so it must not return through the caller's frames, and calls `entry` from here.
/// Returns the child's pid, or a negated errno.
///
/// # Safety
/// `args` names a valid stack that nothing else uses while the child runs (CLONE_VFORK), and
/// `entry` only makes system calls and ends with exec or exit.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3(
    args: &mut libc::clone_args,
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> i64 {
    let ret: i64;
    // SAFETY: see the function's contract. The parent returns from `syscall` with the pid
    // or an error in rax; the child with 0, on its own stack (16-byte aligned, so `call`
    // leaves it as a function expects), never to leave this block.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "mov edi, eax",
            "mov eax, {exit}",
            "syscall",
            "ud2",
            "2:",
            exit = const libc::SYS_exit,
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut libc::clone_args,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3(
    _: &mut libc::clone_args,
    _: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    _: *mut libc::c_void,
) -> i64 {
    -(libc::ENOSYS as i64)
}
