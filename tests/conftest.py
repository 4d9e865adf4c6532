"""Shared test helpers: seeds, tolerances in the flash-attention style, tiny random-weight models."""
import os

# On machines without CUDA (CI) the Triton kernels run under the interpreter. It must be decided before the kernels
# are defined, hence here, before any test imports swaa.attention.triton.
if "TRITON_INTERPRET" not in os.environ:
    import torch as _torch
    if not _torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # nothing in the tests needs the hub
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def assert_close_to_ref(out, out_ref, out_pt, *, floor=2e-5, name="out"):
    """A backend passes when its error against the fp32 reference is at most twice PyTorch's own
    low-precision error (``out_pt``: the reference computed in the input dtype), plus a small floor."""
    err = (out.float() - out_ref.float()).abs().max().item()
    pt_err = (out_pt.float() - out_ref.float()).abs().max().item()
    if out.dtype in (torch.bfloat16, torch.float16):
        # one rounding step of the output itself, for the cases where PyTorch's error happens to be 0
        floor += torch.finfo(out.dtype).eps * out_ref.float().abs().max().item()
    assert err <= 2 * pt_err + floor, f"{name}: error {err:.3g} > 2 x PyTorch's {pt_err:.3g} + {floor:.3g}"


def assert_grads_close_to_ref(q, k, v, do, *, floor, backend="triton", **kw):
    """dq, dk, dv of ``swaa_attention(backend=...)`` against attention_ref's (fp32, and in the input dtype for
    PyTorch's own error), each by :func:`assert_close_to_ref`. Returns the backend's gradients."""
    from swaa.attention import attention_ref, swaa_attention
    grads = lambda fn: torch.autograd.grad(fn(), (q, k, v), do)
    got = grads(lambda: swaa_attention(q, k, v, backend=backend, **kw))
    ref = grads(lambda: attention_ref(q, k, v, **kw))
    pt = grads(lambda: attention_ref(q, k, v, upcast=False, **kw))
    for name, a, r, p in zip(("dq", "dk", "dv"), got, ref, pt):
        assert_close_to_ref(a, r, p, floor=floor, name=name)
    return got


def free_port() -> int:
    """A TCP port nothing listens on now (other jobs on the machine may hold the usual ones)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """The local addresses that sockets listen on at ``port``, as the kernel lists them (/proc/net/tcp, tcp6):
    {"127.0.0.1"} for this machine only; "0.0.0.0" or "::" is every interface."""
    import ipaddress
    from pathlib import Path
    found = set()
    for name, size in (("tcp", 4), ("tcp6", 16)):
        path = Path("/proc/net") / name
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":                      # 0A: LISTEN
                raw = bytes.fromhex(addr)                                  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, size, 4))
                found.add(str(ipaddress.ip_address(raw)))
    return found
