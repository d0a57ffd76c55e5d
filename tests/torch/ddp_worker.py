"""One process of the DistributedDataParallel test: ``python ddp_worker.py RANK PORT OUT``.

Rank r trains on half r of the batch that test_torch_distributed.make_problem builds,
through DistributedDataParallel over gloo on 127.0.0.1:PORT, and saves its gradients
to OUT/grads<r>.pt.
"""
import datetime
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, os.path.dirname(__file__))
from test_torch_distributed import loss_of, make_problem  # noqa: E402


def main(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        model, x = make_problem()
        ddp = DistributedDataParallel(model)
        half = x.shape[0] // 2
        loss_of(ddp, x[rank * half:(rank + 1) * half]).backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        torch.save(grads, os.path.join(out, f"grads{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
