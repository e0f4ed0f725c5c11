# SPDX-License-Identifier: MIT
"""An independent PyTorch reference for `shapebias attack`, written from peers.md §5.1 (torchattacks
3.5.1's op order) and Madry's best-iterate rule, without random start (whose noise is drawn per
input here and per batch there). Float32 on the CPU."""
import torch
import torch.nn.functional as F


def loss_fn(logits, cls, loss, targeted):
    if loss == "ce":
        l = F.cross_entropy(logits, cls, reduction="none")
    else:
        own = logits.gather(1, cls[:, None])[:, 0]
        others = logits.scatter(1, cls[:, None], float("-inf"))
        l = others.max(1).values - own
    return -l if targeted else l


def attack(model, x, y, mean, std, method="pgd", norm="linf", eps=8 / 255, alpha=2 / 255, steps=10,
           use_best=False, loss="ce", target=None):
    """model takes normalised input; x in [0,1]; returns the adversarial images."""
    f = lambda z: model((z - mean) / std)
    targeted = target is not None
    cls = target if targeted else y
    x0 = x.clone().detach()

    def grad_at(z):
        z = z.clone().detach().requires_grad_(True)
        losses = loss_fn(f(z), cls, loss, targeted)
        g, = torch.autograd.grad(losses.mean(), [z])
        return losses.detach(), g

    if method == "fgsm":
        _, g = grad_at(x0)
        return torch.clamp(x0 + eps * g.sign(), 0, 1).detach()
    xa = x0.clone()
    best_loss = best_x = None
    for _ in range(steps):
        losses, g = grad_at(xa)
        if use_best:
            if best_loss is None:
                best_loss, best_x = losses.clone(), xa.clone()
            else:
                better = best_loss < losses
                best_x[better], best_loss[better] = xa[better], losses[better]
        with torch.no_grad():
            if norm == "linf":
                xn = xa + alpha * g.sign()
                delta = torch.clamp(xn - x0, min=-eps, max=eps)
                xa = torch.clamp(x0 + delta, min=0, max=1).detach()
            else:
                gn = torch.norm(g.view(len(g), -1), p=2, dim=1) + 1e-10
                xn = xa + alpha * (g / gn.view(-1, 1, 1, 1))
                delta = xn - x0
                dn = torch.norm(delta.view(len(delta), -1), p=2, dim=1)
                factor = torch.min(eps / dn, torch.ones_like(dn))
                xa = torch.clamp(x0 + delta * factor.view(-1, 1, 1, 1), min=0, max=1).detach()
    if not use_best:
        return xa
    with torch.no_grad():
        losses = loss_fn(f(xa), cls, loss, targeted)
        better = best_loss < losses
        best_x[better] = xa[better]
    return best_x
