"""What an agent gone bad runs: code that makes a syscall the sandbox's seccomp profile kills for."""



PTRACE_CODE = (
    "import ctypes, platform\n"
    "nr = {'x86_64': 101, 'aarch64': 117}[platform.machine()]\n"
    "ctypes.CDLL(None).syscall(nr, 0, 0, 0, 0)\n"
)
