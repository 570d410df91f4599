"""Noise-conditional score networks.

Every network has the same interface (as in NVlabs/edm, networks know nothing of the loss or
the sampler):

    net = Net(sigmas, ...)          # sigmas: the (L,) noise levels, index 0 = largest
    score = net(x, level_index)     # x (N, ...), level_index (N,) long -> score, same shape as x

The noise levels are registered as a buffer ``net.sigmas`` so a checkpoint records them.
"""
