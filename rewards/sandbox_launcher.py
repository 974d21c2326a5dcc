"""Sandbox launcher: a standalone script (run as ``python -I -S sandbox_launcher.py LEVEL WORKDIR LIMITS PARENT_PID``).

It is a fresh single-threaded process, so namespace and mount calls are safe here (``preexec_fn`` in a threaded Ray
actor is not). Protocol: stdin starts with ``<program byte length>\\n<program bytes>``; the rest of stdin is the
program's input. The launcher isolates itself, forks the program (pid 1 of a new pid namespace when available) and
exits with the program's status. Exit code 121 means the requested isolation level could not be set up.

Levels (see docs/rewards.md):
  full    root or CAP_SYS_ADMIN: new net/mount/pid/ipc namespaces, private tmpfs on /tmp /var/tmp /dev/shm (the work
          dir lives there), drop to uid/gid nobody, resource limits.
  userns  unprivileged user namespace: same namespaces and tmpfs, every other mount bind-remounted read-only.
  rlimits best effort: resource limits, a private work dir, process-group kill by the parent; network stays open.
          As root it drops to nobody when the interpreter is readable by others (RLIMIT_NPROC never binds root).
This file must not import anything outside the standard library (it runs with ``-S``).
"""

import ctypes
import json
import os
import resource
import signal
import sys
import time

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
NOBODY = 65534
SETUP_FAILED = 121
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    """Raise OSError with errno when a libc call failed."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    """mount(2) through libc."""
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def _tasks_of_uid(uid: int) -> int:
    """Number of tasks (threads count for RLIMIT_NPROC) owned by ``uid`` right now."""
    total = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/status") as fh:
                    fields = dict(line.split(":", 1) for line in fh if ":" in line)
                if int(fields["Uid"].split()[0]) == uid:
                    total += int(fields["Threads"])
            except (OSError, KeyError, ValueError):
                continue
    return total


def _private_tmpfs(tmpfs_mb: int) -> str:
    """Make mounts private (nothing propagates to the host), then mount fresh tmpfs over world-writable dirs."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(path):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    workdir = "/tmp/work"
    os.mkdir(workdir, 0o777)
    os.chmod(workdir, 0o777)
    return workdir


def _readonly_other_mounts() -> None:
    """Bind-remount every mount except our tmpfs and pseudo filesystems read-only (userns level)."""
    with open("/proc/self/mountinfo") as fh:
        points = [line.split()[4] for line in fh]
    keep_writable = ("/tmp", "/var/tmp", "/dev/shm", "/proc", "/sys", "/dev")
    for point in points:
        if point.startswith(keep_writable):
            continue
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        except OSError:
            pass  # a locked mount keeps its flags; documented as best effort


def _expose_stdlib() -> None:
    """Bind the interpreter's prefix read-only under the private /tmp and point sys.path there.

    Dropping to nobody would otherwise break imports when Python lives under a private directory (pyenv in /root):
    the bind mount path does not traverse that directory.
    """
    target = "/tmp/.python"
    os.mkdir(target, 0o755)
    _mount(sys.base_prefix, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
    prefix = sys.base_prefix

    def moved(paths):
        return [p.replace(prefix, target, 1) if p.startswith(prefix) else p for p in paths]

    sys.path[:] = moved(sys.path)
    for module in list(sys.modules.values()):  # packages imported already look up submodules in their __path__
        search = getattr(module, "__path__", None)
        if isinstance(search, list):
            search[:] = moved(search)
    sys.path_importer_cache.clear()


def _readable_by_others(path: str) -> bool:
    """Whether every directory on ``path`` is searchable by other users (so nobody can import the stdlib)."""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & 0o001:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def _isolate(level: str, workdir: str, tmpfs_mb: int) -> tuple[str, int | None]:
    """Enter the namespaces of ``level``; return (work dir, uid to drop to or None)."""
    if level == "rlimits":
        if os.geteuid() == 0 and _readable_by_others(sys.base_prefix):
            os.chmod(workdir, 0o777)  # root cannot be limited by RLIMIT_NPROC: run as nobody when Python allows it
            return workdir, NOBODY
        return workdir, None
    if level == "full":
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
        path = _private_tmpfs(tmpfs_mb)
        _expose_stdlib()
        _readonly_other_mounts()
        return path, NOBODY
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as fh:
            fh.write(text)
    path = _private_tmpfs(tmpfs_mb)
    _readonly_other_mounts()
    return path, None


def _set_limits(limits: dict, nproc_base: int) -> None:
    """Resource limits inherited by the program and everything it forks."""
    mib = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_s"], limits["cpu_s"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc_base + limits["max_processes"],) * 2)


def _read_program() -> bytes:
    """Read the length-prefixed program from fd 0, leaving the rest of stdin to the program."""
    header = b""
    while not header.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            raise EOFError("stdin closed before the program length")
        header += chunk
    size, data = int(header), b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise EOFError("stdin closed inside the program")
        data += chunk
    return data


def _run_program(source: bytes, workdir: str, drop_uid, limits: dict, nproc_base: int) -> None:
    """Child side: die with the launcher, drop privileges, limit, run the program, never return."""
    code = 1
    try:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os.chdir(workdir)
        if drop_uid is not None:
            os.setgroups([])
            os.setgid(drop_uid)
            os.setuid(drop_uid)
        _set_limits(limits, nproc_base)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"})
        sys.argv = ["solution.py"]
        code = 0
        exec(compile(source, "solution.py", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - the program's own error: report it like a normal interpreter would
        code = 1
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _children() -> list[int]:
    """Direct children of this process (orphans of the program are re-parented here: we are a subreaper)."""
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as fh:
                pids += [int(p) for p in fh.read().split()]
        except OSError:
            continue
    return pids


def _kill_descendants() -> None:
    """Kill and reap whatever the program left running (bounded: a fork bomb cannot keep us here)."""
    for _ in range(200):
        children = _children()
        if not children:
            return
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def main() -> int:
    """Set up isolation, run the program, return its exit status."""
    level, workdir, limits, parent = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
    # die with the process that started us (a pool worker killed at its timeout must not leave sandboxes behind)
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        return SETUP_FAILED
    source = _read_program()
    own_tasks = _tasks_of_uid(os.getuid())  # counted before a user namespace renames our uid to 0
    try:
        workdir, drop_uid = _isolate(level, workdir, limits["tmpfs_mb"])
    except OSError as exc:
        print(f"sandbox: isolation level {level!r} unavailable: {exc}", file=sys.stderr)
        return SETUP_FAILED
    nproc_base = _tasks_of_uid(drop_uid) if drop_uid is not None else own_tasks
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = os.fork()  # with CLONE_NEWPID the child is pid 1 of the new namespace: its exit kills the whole tree
    if pid == 0:
        _run_program(source, workdir, drop_uid, limits, nproc_base)
    _, status = os.waitpid(pid, 0)
    _kill_descendants()
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
