"""EMA teacher: the momentum schedule, the update formula, frozen teacher, accumulation pattern."""

import math

import pytest
import torch
from torch import nn

from evcmae.pretrain.ema import ema_momentum, ema_update, horizon_base, initial_share, make_teacher


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_momentum_schedule_endpoints_and_midpoint():
    assert ema_momentum(0, 1000) == pytest.approx(0.996)
    assert ema_momentum(500, 1000) == pytest.approx(0.998)
    assert ema_momentum(1000, 1000) == pytest.approx(1.0)
    assert ema_momentum(5000, 1000) == pytest.approx(1.0)  # held after the end
    expected = 0.999 - 0.009 * (math.cos(math.pi / 4) + 1) / 2
    assert ema_momentum(250, 1000, base=0.99, final=0.999) == pytest.approx(expected)
    values = [ema_momentum(s, 100) for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))  # monotone
    with pytest.raises(ValueError):
        ema_momentum(0, 0)


def test_make_teacher_is_frozen_copy():
    student = small_net()
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    for (_n, t), (_, s) in zip(teacher.named_parameters(), student.named_parameters()):
        assert torch.equal(t, s) and t.data_ptr() != s.data_ptr()
    x = torch.randn(5, 4)
    (teacher(x).sum() + student(x).sum()).backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_update_equals_formula_and_copies_buffers():
    student = small_net()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()
    student(torch.randn(16, 4))  # moves BatchNorm running stats
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    m = 0.9
    ema_update(teacher, student, m)
    for n, s in student.named_parameters():
        torch.testing.assert_close(dict(teacher.named_parameters())[n], m * before[n] + (1 - m) * s.detach())
    for (n, tb), (_, sb) in zip(teacher.named_buffers(), student.named_buffers()):
        assert torch.equal(tb, sb), n
    assert all(not p.requires_grad for p in teacher.parameters())


def test_update_rejects_mismatched_models():
    with pytest.raises(ValueError):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.5)


def test_gradient_accumulation_updates_once_per_optimizer_step():
    """The documented pattern: step the optimizer every ``accum`` micro-batches, then update the
    teacher with the momentum of that optimizer step. The teacher then equals the closed form
    over optimizer steps, independent of the number of micro-batches."""
    student = nn.Linear(3, 1, bias=False)
    teacher = make_teacher(student)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    accum, total_steps, step = 4, 3, 0
    expected = teacher.weight.detach().clone()
    for i in range(accum * total_steps):
        student(torch.ones(1, 3)).sum().div(accum).backward()
        if (i + 1) % accum == 0:
            opt.step()
            opt.zero_grad()
            m = ema_momentum(step, total_steps, base=0.5)
            ema_update(teacher, student, m)
            expected = m * expected + (1 - m) * student.weight.detach()
            step += 1
    assert step == total_steps
    torch.testing.assert_close(teacher.weight, expected)


@pytest.mark.parametrize("steps", [150, 600, 2000])
def test_horizon_rule_leaves_the_init_share_it_promises(steps):
    """The base momentum the rule picks makes the product of the schedule's momenta (the weight
    the teacher still gives its initialisation) equal the target, and a larger base would not."""
    base = horizon_base(steps, init_share=1e-3)
    assert initial_share(steps, base) == pytest.approx(1e-3, rel=1e-6)
    assert initial_share(steps, base + 1e-3) > 1e-3
    # cosine schedule: share ≈ exp(-(1 - base) * steps / 2), so base ≈ 1 - 2 ln(1000) / steps
    assert base == pytest.approx(1 - 2 * math.log(1000) / steps, abs=5e-3)


def test_horizon_rule_keeps_the_configured_base_for_long_runs():
    assert horizon_base(5000, init_share=1e-3, base=0.996) == 0.996
    assert initial_share(5000, 0.996) < 1e-3


def test_initial_share_matches_a_simulated_teacher():
    """Run the EMA on scalars: the teacher's coefficient on its initial value is the product."""
    steps, base = 50, 0.9
    init, student = torch.tensor(1.0), torch.tensor(0.0)
    teacher = init.clone()
    for s in range(1, steps + 1):
        teacher = ema_momentum(s, steps, base) * teacher + (1 - ema_momentum(s, steps, base)) * student
    assert float(teacher) == pytest.approx(initial_share(steps, base), rel=1e-5)
