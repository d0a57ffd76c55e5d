"""The ops inside torch.compile and DistributedDataParallel."""
import os
import socket
import subprocess
import sys
import time

import torch
from torch import nn

from dcn_ref.torch import DeformConv2d, deform_conv2d

HERE = os.path.dirname(os.path.abspath(__file__))


class TinyDeformable(nn.Module):
    """conv -> (offsets, mask from a conv) -> deformable conv -> mean: a DCNv2 block."""

    def __init__(self, channels=3, hidden=4):
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.offset_mask = nn.Conv2d(hidden, 27, 3, padding=1)
        self.deform = DeformConv2d(hidden, hidden, 3, padding=1)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        offset_mask = self.offset_mask(h)
        offset, mask = offset_mask[:, :18], torch.sigmoid(offset_mask[:, 18:])
        return self.deform(h, offset, mask)


def make_problem():
    """A model with random (non-zero) offset layers and a batch of 4 images, float64."""
    torch.manual_seed(0)
    model = TinyDeformable().double()
    with torch.no_grad():
        model.offset_mask.weight.mul_(3.0)
    x = torch.randn(4, 3, 6, 5, dtype=torch.float64)
    return model, x


def loss_of(model, x):
    return (model(x) ** 2).mean()


def test_compile_fullgraph_equals_eager():
    model, x = make_problem()
    x.requires_grad_()
    eager = loss_of(model, x)
    eager_grads = torch.autograd.grad(eager, [x, *model.parameters()])
    torch._dynamo.reset()
    compiled = torch.compile(lambda m, x: loss_of(m, x), fullgraph=True, backend="aot_eager")
    loss = compiled(model, x)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    torch.testing.assert_close(loss, eager, rtol=1e-12, atol=0)
    for g, e in zip(grads, eager_grads):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-14)


def test_compile_traces_the_bridge_op_into_the_graph():
    seen = []

    def backend(gm, example_inputs):
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm

    torch._dynamo.reset()
    f = torch.compile(lambda x, o, w: deform_conv2d(x, o, w, padding=1), fullgraph=True,
                      backend=backend)
    x, o, w = torch.randn(1, 2, 4, 4), torch.randn(1, 18, 4, 4), torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(f(x, o, w), deform_conv2d(x, o, w, padding=1))
    assert "dcn_ref.deform_conv2d.default" in seen


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_on_two_processes_gives_the_gradients_of_one_process_on_the_whole_batch(tmp_path):
    model, x = make_problem()
    loss_of(model, x).backward()
    expected = {n: p.grad for n, p in model.named_parameters()}
    port = free_port()
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(HERE)),
                                                        os.path.dirname(HERE),
                                                        os.environ.get("PYTHONPATH")])))
    workers = [subprocess.Popen([sys.executable, os.path.join(HERE, "ddp_worker.py"), str(rank),
                                 str(port), str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for rank in range(2)]
    deadline = time.monotonic() + 240   # both processes together, start-up included
    try:
        outputs = [w.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
                   for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, output in zip(workers, outputs):
        assert w.returncode == 0, output[-3000:]
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        assert grads.keys() == expected.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, expected[name], rtol=1e-12, atol=1e-15, msg=name)
