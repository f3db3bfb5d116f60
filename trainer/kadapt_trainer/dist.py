"""Process-group helpers: the same code runs as one process, under torchrun, and on many nodes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from kadapt_trainer.ports import free_port as free_port  # re-exported: the launcher-less default

#: The env vars DeepSpeed reads; a single process without a launcher sets them itself.
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the gang."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Only rank 0 reports and writes shared files."""
        return self.rank == 0


def ensure_launcher_env() -> DistInfo:
    """Fill in what torchrun would have set, so DeepSpeed does not try mpi4py."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("LOCAL_RANK", os.environ["RANK"])
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )


def device_for(info: DistInfo) -> torch.device:
    """One GPU per rank when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def initialized() -> bool:
    """True once the process group exists."""
    return torch_dist.is_available() and torch_dist.is_initialized()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if initialized() and torch_dist.get_world_size() > 1:
        torch_dist.barrier()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a few floats over all ranks in one collective."""
    if not initialized() or torch_dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when the flag is set on any rank, so that all ranks take the same branch."""
    return all_reduce_sum([1.0 if flag else 0.0], device)[0] > 0


def broadcast_object(obj: object) -> object:
    """Rank 0's value on every rank."""
    if not initialized() or torch_dist.get_world_size() == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]
