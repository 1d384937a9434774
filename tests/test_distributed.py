"""Helpers that run on every rank of a DDP job (evcmae.distributed), in one and in two processes."""

import torch

from evcmae.distributed import gather_from_all_ranks, ranks


def test_gather_from_all_ranks_is_identity_without_process_group():
    t = torch.randn(3, 2, requires_grad=True)
    out = gather_from_all_ranks(t)
    assert torch.equal(out, t) and not out.requires_grad


def _gather_worker(rank, world, init_file, result_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    t = torch.full((rank + 1, 2), float(rank))  # ranks hold different numbers of rows
    out = gather_from_all_ranks(t)
    if rank == 0:
        torch.save(out, result_file)
    dist.destroy_process_group()


def test_gather_from_all_ranks_two_processes(tmp_path):
    import torch.multiprocessing as mp

    args = (2, str(tmp_path / "init"), str(tmp_path / "out.pt"))
    mp.start_processes(_gather_worker, args=args, nprocs=2, start_method="fork")  # fork: no re-import
    out = torch.load(tmp_path / "out.pt")
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]


def test_ranks_without_trainer_or_group_is_single_process():
    assert ranks() == (1, 0) and ranks().world_size == 1


def test_ranks_reads_the_trainer():
    class FakeTrainer:
        world_size, global_rank = 4, 3

    assert ranks(FakeTrainer()) == (4, 3)
