import pytest
import torch
from torch import nn

from evcmae.backbones.batchnorm import batchnorms, cumulative_batchnorm, near_constant_channels


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3), nn.ReLU(), nn.BatchNorm1d(4))


@torch.no_grad()
def test_statistics_are_the_plain_mean_over_every_batch_and_momenta_come_back():
    net = _net()
    net.train()
    net(torch.randn(8, 3) * 5 + 7)  # stale statistics the block must discard
    batches = [torch.randn(6, 3) + i for i in range(4)]
    with cumulative_batchnorm(net) as norms:
        assert len(norms) == 2 and all(m.momentum is None for m in norms)
        for x in batches:
            net(x)
    first = net[1]
    assert first.momentum == 0.3 and net[3].momentum == 0.1
    # reference: each batch's mean and unbiased variance of the BatchNorm's input, averaged
    inputs = [net[0](x) for x in batches]
    mean = torch.stack([h.mean(0) for h in inputs]).mean(0)
    var = torch.stack([h.var(0, unbiased=True) for h in inputs]).mean(0)
    torch.testing.assert_close(first.running_mean, mean)
    torch.testing.assert_close(first.running_var, var)
    assert int(first.num_batches_tracked) == len(batches)


def test_momenta_are_restored_when_the_block_raises():
    net = _net()
    with pytest.raises(RuntimeError), cumulative_batchnorm(net):
        raise RuntimeError("stop")
    assert [m.momentum for m in batchnorms(net)] == [0.3, 0.1]


def test_nothing_to_do_without_batchnorm():
    assert batchnorms(None) == []
    with cumulative_batchnorm(nn.Linear(2, 2)) as norms:
        assert norms == []


def test_near_constant_channels_names_layers_at_the_share():
    net = nn.Sequential(nn.Conv2d(2, 20, 1), nn.BatchNorm2d(20), nn.Conv2d(20, 10, 1), nn.BatchNorm2d(10))
    assert near_constant_channels(net) == {}  # fresh statistics: variance 1 everywhere
    net[1].running_var[:2] = 5e-5  # exactly a tenth of 20 channels
    net[3].running_var[0] = 2e-4  # above the threshold
    assert near_constant_channels(net) == {"1": (2, 20)}
    assert near_constant_channels(net, share=0.2) == {}
    assert near_constant_channels(net, below=1e-3) == {"1": (2, 20), "3": (1, 10)}
    assert near_constant_channels(None) == {}


def test_near_constant_channels_counts_each_layers_eps():
    # At eps 1e-3 a channel of variance 5e-5 is scaled by about 31 at evaluation, not about 123:
    # the same statistics that flag a layer at RVT's eps 1e-5 are harmless there.
    net = nn.Sequential(nn.BatchNorm2d(10), nn.BatchNorm2d(10, eps=1e-3))
    net[0].running_var[:5] = 5e-5
    net[1].running_var[:5] = 5e-5
    assert near_constant_channels(net) == {"0": (5, 10)}
    # The threshold is on var + eps: at eps 5e-5 a variance of 5e-5 sits at 1e-4 < 1.1e-4.
    net[1].eps = 5e-5
    assert near_constant_channels(net) == {"0": (5, 10), "1": (5, 10)}
