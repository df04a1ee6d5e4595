"""The block registry: only ops that ONNX opset 17 and TensorRT run natively (Conv, BatchNorm (folded on export),
Relu, Add, GlobalAveragePool, Gemm). Submodule names are stable so that weight inheritance can match them.

A block with an identity shortcut has ``start_as_identity()``: its residual branch's last BatchNorm gets scale and
shift zero (the zero-init residual of Goyal et al. 2017), so a layer inserted into a trained network starts as the
identity (Net2Net's deeper net) and the network keeps its function."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .._registry import Registry

BlockFactory = Callable[..., nn.Module]
BLOCKS: Registry[BlockFactory] = Registry("block")



def register_block(name: str) -> Callable[[BlockFactory], BlockFactory]:
    return BLOCKS.register(name)


def create_block(name: str, cin: int, cout: int, stride: int, kernel: int = 3, expansion: int = 1) -> nn.Module:
    return BLOCKS.get(name)(cin, cout, stride, kernel=kernel, expansion=expansion)


class ConvBN(nn.Sequential):
    """Conv (no bias) + BatchNorm (+ ReLU): the unit every block is built from; BN folds into the conv on export."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.act = nn.ReLU(inplace=True)


def _silence(unit: ConvBN) -> None:
    """BatchNorm scale and shift zero: the unit outputs zero (before its ReLU, if any), in training and eval mode."""
    nn.init.zeros_(unit.bn.weight)
    nn.init.zeros_(unit.bn.bias)


class _Shortcut(nn.Module):
    """Identity when shapes match, else a strided 1x1 projection."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.proj = None if (cin == cout and stride == 1) else ConvBN(cin, cout, 1, stride, act=False)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.proj is None else self.proj(x)


@register_block("res")
class ResidualBlock(nn.Module):
    """ResNet basic block: two kxk convs and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3, expansion: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cout, kernel, stride)
        self.conv2 = ConvBN(cout, cout, kernel, act=False)
        self.shortcut = _Shortcut(cin, cout, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))

    def start_as_identity(self) -> bool:
        """Residual branch silenced: the block computes relu(x), which is x on the non-negative output of a block
        ending in a ReLU (every res or dws block, the stem). False where there is no identity shortcut."""
        if self.shortcut.proj is not None:
            return False
        _silence(self.conv2)
        return True


@register_block("dws")
class DepthwiseSeparableBlock(nn.Module):
    """MobileNetV1 unit: depthwise kxk then pointwise 1x1; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3, expansion: int = 1) -> None:
        super().__init__()
        self.dw = ConvBN(cin, cin, kernel, stride, groups=cin)
        self.pw = ConvBN(cin, cout, 1, act=False)
        self.residual = cin == cout and stride == 1
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.pw(self.dw(x))
        return self.act(y + x if self.residual else y)

    def start_as_identity(self) -> bool:
        """As ``ResidualBlock.start_as_identity``: relu(x), x after a block ending in a ReLU."""
        if not self.residual:
            return False
        _silence(self.pw)
        return True


@register_block("mbconv")
class InvertedResidualBlock(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand (e>1), depthwise kxk, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, stride: int, kernel: int = 3, expansion: int = 1) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = ConvBN(cin, hidden, 1) if expansion > 1 else None
        self.dw = ConvBN(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1, act=False)
        self.residual = cin == cout and stride == 1

    def forward(self, x: Tensor) -> Tensor:
        y = x if self.expand is None else self.expand(x)
        y = self.project(self.dw(y))
        return y + x if self.residual else y

    def start_as_identity(self) -> bool:
        """Linear projection silenced: the block computes exactly x."""
        if not self.residual:
            return False
        _silence(self.project)
        return True
