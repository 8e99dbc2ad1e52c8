"""The Python globals a pickle of the field's files may name: numpy's array and dtype
reconstruction and plain containers, nothing that runs code. The released weights' pickles
(weights/forms.py) and insightface's ``.bin`` verification sets (verification/binfile.py) are
both read with it, so it sits below both."""

NUMPY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        # Protocol-2 pickles made by Python 3 spell bytes as _codecs.encode(text, "latin1").
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
    }
)
