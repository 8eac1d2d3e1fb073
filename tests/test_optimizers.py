"""MXNet 1.9.1's optimizer updates beyond SGD and Adam: nag_mom_update, rmsprop_update,
rmspropalex_update, signsgd_update, signum_update, ftrl_update, ftml_update and the
multi-precision mp_sgd_update and mp_sgd_mom_update. The expected values were computed
with MXNet 1.9.1 (written here; the tests do not need it)."""

from __future__ import annotations

import numpy as np
import pytest

import gradserve
from gradserve import MXNetError, autograd, nd

WEIGHT = [1.0, -2.0, 3.0, 0.5, -0.25, 0.0]
GRADS = [
    [0.5, 4.0, -6.0, 0.0, 1.5, -0.3],
    [-1.0, 2.5, 0.25, -3.0, 0.7, 2.0],
    [2.0, -0.5, 1.0, 0.125, -2.5, 0.0],
]
STATES = {  # each update's states (in MXNet's order) and their starting values
    "nag_mom_update": {"mom": [0.1, 0.2, -0.3, 0.0, 0.05, -0.1]},
    "rmsprop_update": {"n": [0.01, 0.5, 0.2, 0.0, 1.0, 0.3]},
    "rmspropalex_update": {
        "n": [0.5, 0.6, 0.7, 0.8, 1.0, 0.3],
        "g": [0.1, -0.2, 0.3, 0.0, 0.2, -0.1],
        "delta": [0.01, 0.02, -0.03, 0.0, 0.1, 0.0],
    },
    "signsgd_update": {},
    "signum_update": {"mom": [0.1, -0.2, 0.3, 0.0, 0.0, -0.1]},
    "ftrl_update": {"z": [0.1, -0.2, 0.3, 0.0, 0.5, -0.1], "n": [0.01, 0.5, 0.2, 0.0, 1.0, 0.3]},
    "ftml_update": {
        "d": [0.1, 0.2, 0.3, 0.0, 0.5, 0.1],
        "v": [0.01, 0.5, 0.2, 0.0, 1.0, 0.3],
        "z": [0.1, -0.2, 0.3, 0.0, 0.5, -0.1],
    },
    "mp_sgd_update": {"weight32": WEIGHT},
    "mp_sgd_mom_update": {"mom": [0.1, 0.2, -0.3, 0.0, 0.05, -0.1], "weight32": WEIGHT},
}
FLOAT32_STATES = {"weight32", "mom"}  # a multi-precision update's (its weight is float16)

# (op, arguments, the weight and states after the first step, after the third), from MXNet 1.9.1
MXNET = [
    (
        "nag_mom_update",
        {"lr": 0.1, "momentum": 0.9, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0},
        {
            "weight": [1.0316, -2.0242002, 2.9413, 0.49905, -0.35152498, -0.052499987],
            "mom": [0.06396839, 0.08202419, -0.1729413, -0.00049905, -0.02964848, -0.0749475],
        },
        {
            "weight": [1.070399, -2.111809, 2.5331683, 0.75459504, -0.30013996, -0.437923],
            "mom": [-0.0053148195, 0.0054809228, -0.2063603, 0.08197225, 0.045182116, -0.14999674],
        },
    ),
    (
        "nag_mom_update",
        {"lr": 0.05, "momentum": 0.5, "wd": 0.1, "clip_gradient": 0.0},
        {
            "weight": [1.0175, -1.935, 2.9025002, 0.49625, -0.235625, -0.025000002],
            "mom": [0.044912502, 0.109675005, -0.16451252, -0.00248125, 0.026178125, -0.049875002],
        },
        {
            "weight": [1.0177765, -1.862795, 2.7941928, 0.48729345, -0.22205202, -0.043189414],
            "mom": [0.0035865009, 0.041465398, -0.062198102, -0.004286549, 0.0082230745, -0.012159601],
        },
    ),
    (
        "rmsprop_update",
        {
            "lr": 0.1,
            "gamma1": 0.8,
            "epsilon": 0.001,
            "wd": 0.01,
            "rescale_grad": 0.5,
            "clip_gradient": 1.0,
            "clip_weights": 2.5,
        },
        {
            "weight": [0.82674366, -2.128992, 2.5, 0.484228, -0.3282411, 0.0302737],
            "n": [0.02152, 0.6, 0.36, 4.9999994e-06, 0.9117513, 0.24450001],
        },
        {
            "weight": [0.8186904, -2.2137513, 2.3748848, 0.6899886, -0.2566166, -0.12828839],
            "n": [0.25246093, 0.5588515, 0.28906688, 0.16097125, 0.80275494, 0.31648034],
        },
    ),
    (
        "rmsprop_update",
        {"lr": 0.01, "clip_gradient": 0.0, "wd": 0.2},
        {"weight": [1.0, -2.0, 3.0, 0.5, -0.25, 0.0], "n": [0.0095, 0.475, 0.19, 0.0, 0.95, 0.285]},
        {
            "weight": [1.0, -2.0, 3.0, 0.5, -0.25, 0.0],
            "n": [0.00857375, 0.42868748, 0.171475, 0.0, 0.85737497, 0.2572125],
        },
    ),
    (
        "rmspropalex_update",
        {
            "lr": 0.1,
            "gamma1": 0.8,
            "gamma2": 0.7,
            "epsilon": 0.001,
            "wd": 0.01,
            "rescale_grad": 0.5,
            "clip_gradient": 1.0,
            "clip_weights": 2.5,
        },
        {
            "weight": [0.9657403, -2.1073213, 2.5, 0.4993755, -0.26270095, 0.031048516],
            "n": [0.41352, 0.68, 0.76, 0.64000505, 0.9117513, 0.24450001],
            "g": [0.132, 0.039999977, 0.04000002, 0.0009999999, 0.3095, -0.11000001],
            "delta": [-0.03425965, -0.10732136, 0.09375318, -0.00062451034, -0.012700953, 0.031048516],
        },
        {
            "weight": [0.91304946, -2.4040887, 2.4598422, 0.6965455, -0.23910038, -0.20612489],
            "n": [0.50312257, 0.6101088, 0.54512495, 0.5705474, 0.8028277, 0.31648025],
            "g": [0.20602518, 0.13099451, 0.1546, -0.14561838, 0.053659707, 0.08938283],
            "delta": [-0.108269185, -0.10135908, -0.040157825, 0.07573958, 0.07544564, -0.09754483],
        },
    ),
    (
        "rmspropalex_update",
        {"lr": 0.01, "clip_gradient": 0.0, "wd": 0.2, "epsilon": 0.5},
        {
            "weight": [1.009, -1.982, 2.973, 0.5, -0.16, 0.0],
            "n": [0.475, 0.57, 0.66499996, 0.76, 0.95, 0.285],
            "g": [0.095, -0.19, 0.285, 0.0, 0.19, -0.095],
            "delta": [0.009, 0.018, -0.026999999, 0.0, 0.089999996, 0.0],
        },
        {
            "weight": [1.02439, -1.95122, 2.92683, 0.5, -0.006100014, 0.0],
            "n": [0.42868748, 0.514425, 0.60016245, 0.6859, 0.85737497, 0.2572125],
            "g": [0.0857375, -0.171475, 0.2572125, 0.0, 0.171475, -0.0857375],
            "delta": [0.007289999, 0.014579998, -0.021869997, 0.0, 0.07289999, 0.0],
        },
    ),
    (
        "signsgd_update",
        {"lr": 0.1, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0},
        {"weight": [0.899, -2.098, 3.097, 0.4995, -0.34975, 0.1]},
        {"weight": [0.8971029, -2.0937061, 2.8909092, 0.49840155, -0.34895086, -9.990169e-05]},
    ),
    (
        "signsgd_update",
        {"lr": 0.5, "wd": 0.3, "rescale_grad": -2.0, "clip_gradient": 0.0},
        {"weight": [0.35000002, -2.2, 3.0500002, 0.425, -0.7125, 0.5]},
        {"weight": [0.17787504, -1.5145001, 1.2786252, 0.23206258, -0.4397812, -0.06374999]},
    ),
    (
        "signum_update",
        {"lr": 0.1, "momentum": 0.9, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0, "wd_lh": 0.05},
        {
            "weight": [1.095, -2.09, 3.085, 0.3975, -0.34875, -0.1],
            "mom": [0.06399999, -0.278, 0.36700004, -0.0005000001, -0.07475002, -0.07499999],
        },
        {
            "weight": [1.0835774, -2.2686522, 3.253727, 0.593035, -0.34477124, -0.2985025],
            "mom": [-0.005335048, -0.28611943, 0.23007393, 0.08249175, 0.0087133795, -0.1504605],
        },
    ),
    (
        "signum_update",
        {"lr": 0.5, "momentum": 0.5, "wd": 0.3, "clip_gradient": 0.0},
        {"weight": [0.5, -1.5, 2.5, 0.0, 0.25, -0.5], "mom": [-0.10000001, 0.20000002, -0.3, -0.075, 0.0375, -0.05]},
        {
            "weight": [-0.5, -0.5, 1.5, 0.0, 0.25, 0.5],
            "mom": [-0.0625, 0.3125, -0.5625, 0.056250002, 0.028125001, 0.025000002],
        },
    ),
    (
        "ftrl_update",
        {"lr": 0.1, "lamda1": 0.05, "beta": 0.5, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0},
        {
            "weight": [0.16781156, -0.6433607, 1.2588562, 0.0, -0.10422616, 0.018710984],
            "z": [-1.3425823, 11.152763, -20.146948, 0.0, 1.875, -0.25],
            "n": [0.0725, 1.5, 1.2, 0.0, 1.5625, 0.32250002],
        },
        {
            "weight": [0.15401965, -0.67949355, 1.2218491, 0.059132654, -0.07694282, -0.03580143],
            "z": [-2.5928645, 14.331466, -20.963535, -0.93873495, 1.696266, 0.64108163],
            "n": [1.3225, 2.5625, 1.465625, 1.0039062, 2.685, 1.3225],
        },
    ),
    (
        "ftrl_update",
        {"lr": 0.5, "lamda1": 0.0, "wd": 0.3, "clip_gradient": 0.0},
        {
            "weight": [-0.04, 0.0538472, -0.093913555, 0.0, -0.116279066, 0.02945122],
            "z": [0.1, -0.2, 0.3, 0.0, 0.5, -0.1],
            "n": [0.01, 0.5, 0.2, 0.0, 1.0, 0.3],
        },
        {
            "weight": [-0.04, 0.0538472, -0.093913555, 0.0, -0.116279066, 0.02945122],
            "z": [0.1, -0.2, 0.3, 0.0, 0.5, -0.1],
            "n": [0.01, 0.5, 0.2, 0.0, 1.0, 0.3],
        },
    ),
    (
        "ftml_update",
        {
            "lr": 0.1,
            "beta1": 0.5,
            "beta2": 0.9,
            "epsilon": 0.001,
            "t": 3,
            "wd": 0.01,
            "rescale_grad": 0.5,
            "clip_grad": 1.0,
        },
        {
            "weight": [0.8914502, -2.0160332, 2.9887679, 0.42923108, -0.2841351, 0.014238676],
            "d": [2.1188424, 12.474107, 8.902859, 0.035326228, 16.442022, 8.778906],
            "v": [0.01576, 0.55, 0.28000003, 2.5000006e-06, 0.95587564, 0.27225],
            "z": [-1.8888425, 25.148212, -26.608578, -0.015163114, 4.671756, -0.125],
        },
        {
            "weight": [0.8848914, -2.0436559, 2.9485884, 0.5164571, -0.26358423, -0.036340315],
            "d": [6.1723833, 12.392469, 8.530194, 5.064127, 15.821994, 9.37509],
            "v": [0.13447048, 0.5428195, 0.25702757, 0.0904608, 0.88510597, 0.3105225],
            "z": [-5.461889, 25.325943, -25.15203, -2.6154041, 4.170428, 0.3406937],
        },
    ),
    (
        "ftml_update",
        {"lr": 0.5, "t": 10, "wd": 0.3, "clip_grad": 0.0},
        {
            "weight": [0.93974084, -1.9744341, 2.9191537, 0.5, -0.2612986, 0.005500881],
            "d": [1.9913994, 14.081321, 8.905809, 1.9879067e-08, 19.913994, 10.907344],
            "v": [0.00999, 0.4995, 0.1998, 0.0, 0.999, 0.29970002],
            "z": [-1.8713994, 27.80264, -25.997427, -9.939534e-09, 5.203499, -0.060000002],
        },
        {
            "weight": [0.93974084, -1.974434, 2.9191537, 0.5, -0.2612986, 0.005500881],
            "d": [1.989408, 14.06724, 8.896903, 1.9879067e-08, 19.894081, 10.896437],
            "v": [0.00997003, 0.49850154, 0.1994006, 0.0, 0.9970031, 0.29910094],
            "z": [-1.8695279, 27.774837, -25.971428, -9.939534e-09, 5.1982956, -0.059940003],
        },
    ),
    (
        "mp_sgd_update",
        {"lr": 0.1, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0},
        {
            "weight": [0.974, -2.098, 3.098, 0.4995, -0.3247, 0.015],
            "weight32": [0.97400004, -2.098, 3.097, 0.4995, -0.32475, 0.015002442],
        },
        {
            "weight": [0.922, -2.168, 3.03, 0.5923, -0.259, -0.0849],
            "weight32": [0.9220029, -2.168706, 3.0283215, 0.5921515, -0.2590756, -0.08492755],
        },
    ),
    (
        "mp_sgd_update",
        {"lr": 0.5, "wd": 0.3, "clip_gradient": 0.0},
        {"weight": [0.85, -1.7, 2.55, 0.425, -0.2125, 0.0], "weight32": [0.85, -1.7, 2.5500002, 0.425, -0.2125, 0.0]},
        {
            "weight": [0.6143, -1.229, 1.843, 0.3071, -0.1536, 0.0],
            "weight32": [0.614125, -1.22825, 1.8423753, 0.3070625, -0.15353125, 0.0],
        },
    ),
    (
        "mp_sgd_mom_update",
        {"lr": 0.1, "momentum": 0.9, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0},
        {
            "weight": [1.064, -1.918, 2.826, 0.4995, -0.2798, -0.075],
            "mom": [0.063999996, 0.081999995, -0.17300001, -0.0005, -0.029750004, -0.07499755],
            "weight32": [1.064, -1.918, 2.827, 0.4995, -0.27975, -0.07499755],
        },
        {
            "weight": [1.165, -1.9375, 2.45, 0.6807, -0.2964, -0.3928],
            "mom": [-0.005288139, 0.0050884765, -0.20658027, 0.08229689, 0.04498674, -0.15043809],
            "weight32": [1.1652479, -1.9371935, 2.4493928, 0.6808474, -0.29626828, -0.39285845],
        },
    ),
    (
        "mp_sgd_mom_update",
        {"lr": 0.5, "momentum": 0.5, "wd": 0.3, "clip_gradient": 0.0},
        {
            "weight": [0.9, -1.6, 2.4, 0.425, -0.1875, -0.05],
            "mom": [-0.10000001, 0.4, -0.6, -0.075, 0.0625, -0.05],
            "weight32": [0.9, -1.6, 2.4, 0.425, -0.1875, -0.05],
        },
        {
            "weight": [0.515, -0.766, 1.149, 0.2246, -0.0792, -0.0661],
            "mom": [-0.19975, 0.39400002, -0.591, -0.09918751, 0.04890625, 0.0013750009],
            "weight32": [0.51524997, -0.76600003, 1.1489999, 0.22456251, -0.079218745, -0.066125005],
        },
    ),
]


def _arrays(op: str) -> tuple[nd.NDArray, dict[str, nd.NDArray]]:
    mp = op.startswith("mp_")
    dtype = "float16" if mp else "float32"
    states = {k: nd.array(v, dtype="float32" if mp and k in FLOAT32_STATES else dtype) for k, v in STATES[op].items()}
    return nd.array(WEIGHT, dtype=dtype), states


@pytest.mark.parametrize(("op", "at", "first", "third"), MXNET, ids=[f"{c[0]}-{i % 2}" for i, c in enumerate(MXNET)])
def test_updates_take_mxnets_steps_in_place(mode, op, at, first, third):
    """Three steps with out=weight: the weight and every state, as MXNet's, through the
    client's own arrays (the states change in place)."""
    w, states = _arrays(op)
    for i, g in enumerate(GRADS):
        assert getattr(nd, op)(w, nd.array(g, dtype=w.dtype), *states.values(), out=w, **at) is w
        if i in (0, 2):
            want = first if i == 0 else third
            for name, a in {"weight": w, **states}.items():
                assert a.dtype == np.dtype("float32" if name in FLOAT32_STATES and op.startswith("mp_") else w.dtype)
                got = a.asnumpy()  # (MXNet's values in the array's dtype: float16's written shortest)
                np.testing.assert_allclose(got, np.array(want[name], got.dtype), rtol=1e-6, err_msg=f"{op} {name}")


def test_an_update_into_a_new_array_leaves_the_weight_and_changes_the_states(mode):
    w, z, n = nd.array([1.0, -2.0, 3.0]), nd.array([0.1, -0.2, 0.3]), nd.array([0.01, 0.5, 0.2])
    fresh = nd.ftrl_update(w, nd.array([0.5, 4.0, -6.0]), z, n, lr=0.1)
    np.testing.assert_allclose(fresh.asnumpy(), [0.2310759, -1.4003947, 2.4623299], rtol=1e-6)
    assert w.asnumpy().tolist() == [1.0, -2.0, 3.0]
    np.testing.assert_allclose(z.asnumpy(), [-3.4990196, 70.898254, -172.7829], rtol=1e-6)
    np.testing.assert_allclose(n.asnumpy(), [0.26, 16.5, 36.2], rtol=1e-6)


@pytest.mark.parametrize("how", ["out", "none"])
def test_nag_into_another_array_decays_mom_by_the_weight_before_the_step(mode, how):
    """MXNet's nag kernel takes mom's last term from the weight after writing its output: the
    new weight with out=weight, the weight as it was with another out or none (two steps; the
    values are MXNet 1.9.1's)."""
    w, mom = nd.array(WEIGHT), nd.array(STATES["nag_mom_update"]["mom"])
    at = MXNET[0][1]
    outs = []
    for g in GRADS[:2]:
        out = nd.zeros((6,)) if how == "out" else None
        got = nd.nag_mom_update(w, nd.array(g), mom, out=out, **at)
        assert got is not w and (out is None or got is out)
        outs.append(got.asnumpy())
    assert w.asnumpy().tolist() == WEIGHT
    np.testing.assert_allclose(outs[0], [1.0316, -2.0242002, 2.9413, 0.49905, -0.35152498, -0.052499987], rtol=1e-6)
    np.testing.assert_allclose(outs[1], [1.14494, -2.11978, 2.83042, 0.688645, -0.3401225, -0.25074998], rtol=1e-6)
    np.testing.assert_allclose(
        mom.asnumpy(), [0.1066, -0.024200015, -0.17119999, 0.09905, -0.061525002, -0.16749999], rtol=1e-6
    )


def test_nag_into_a_view_of_the_whole_weight_is_an_update_of_the_weight(mode):
    """``out=w[:]`` is the weight's memory: mom's last term is of the new weight, as with
    out=w (MXNet 1.9.1's values); the command's ``out_is_weight`` is no argument of the call."""
    w, mom = nd.array([1.0, -2.0, 3.0]), nd.array([0.1, 0.2, 0.3])
    nd.nag_mom_update(w, nd.array([0.5, 0.25, -1.0]), mom, lr=0.1, momentum=0.9, wd=0.5, out=w[:])
    np.testing.assert_allclose(w.asnumpy(), [0.891, -1.6955001, 3.148], rtol=1e-6)
    np.testing.assert_allclose(mom.asnumpy(), [-0.0045500100, 0.23977500, 0.21260001], rtol=1e-6)
    with pytest.raises(MXNetError, match="unknown attribute 'out_is_weight'"):
        nd.nag_mom_update(w, w, mom, lr=0.1, out_is_weight=False)


def test_sign_updates_take_a_nan_as_mxnets_sign_does_0(mode):
    """MXNet's sign is (x > 0) - (x < 0): a NaN gradient or momentum moves nothing."""
    w = nd.array([1.0, -2.0, 3.0])
    nd.signsgd_update(w, nd.array([float("nan"), 1.0, -1.0]), lr=0.1, wd=0.5, out=w)
    np.testing.assert_allclose(w.asnumpy(), [0.95, -2.0, 2.95], rtol=1e-6)
    w, mom = nd.array([1.0, -2.0, 3.0]), nd.zeros(3)
    nd.signum_update(w, nd.array([float("nan"), 1.0, -1.0]), mom, lr=0.1, momentum=0.5, out=w)
    np.testing.assert_allclose(w.asnumpy(), [1.0, -2.1, 3.1], rtol=1e-6)
    assert np.isnan(mom.asnumpy()[0])


def test_multi_precision_updates_step_the_float32_copy(mode):
    """mp_sgd_update reads weight32, not the weight, and writes the weight from it; a float32
    weight is taken too, as in MXNet."""
    w, w32 = nd.array([5.0, 5.0], dtype="float16"), nd.array([1.0, -2.0])
    nd.mp_sgd_update(w, nd.array([0.5, 1.0], dtype="float16"), w32, lr=0.1, wd=0.1, out=w)
    assert w.dtype == np.float16 and w.asnumpy().tolist() == [0.93994140625, -2.080078125]
    np.testing.assert_allclose(w32.asnumpy(), [0.94, -2.08], rtol=1e-6)
    w, w32 = nd.array([1.0, -2.0]), nd.array([1.0, -2.0])
    nd.mp_sgd_update(w, nd.array([0.5, 1.0]), w32, lr=0.1, out=w)
    np.testing.assert_allclose(w.asnumpy(), [0.95, -2.1], rtol=1e-6)


def test_hyperparameters_are_float32_as_in_mxnet(mode):
    """MXNet's optimizer ops declare their hyperparameters float: a float64 weight steps with
    lr = float32(0.1), not 0.1."""
    w, g = nd.array([1.0, -2.0], dtype="float64"), nd.array([1.0, 0.5], dtype="float64")
    nd.sgd_update(w, g, lr=0.1, wd=0.1, out=w)
    assert w.asnumpy().tolist() == [0.8899999982118607, -2.0300000001490117]
    w, mean, var = nd.array([1.0, -2.0], dtype="float64"), nd.zeros(2, dtype="float64"), nd.zeros(2, dtype="float64")
    nd.adam_update(w, g, mean, var, lr=0.1, out=w)
    np.testing.assert_allclose(w.asnumpy(), [0.6837702182040184, -2.316229681794764], rtol=1e-15)
    np.testing.assert_allclose(mean.asnumpy(), [0.10000002384185791, 0.050000011920928955], rtol=1e-15)
    for alex in (False, True):  # clip_weights too (MXNet 1.9.1: 0.800000011920929, not 0.8)
        w, g = nd.array([5.0, -5.0, 0.1], dtype="float64"), nd.array([1.0, -1.0, 0.0], dtype="float64")
        states = [nd.zeros(3, dtype="float64") for _ in range(3 if alex else 1)]
        update = nd.rmspropalex_update if alex else nd.rmsprop_update
        update(w, g, *states, lr=0.1, clip_weights=0.8, out=w)
        assert w.asnumpy().tolist() == [0.800000011920929, -0.800000011920929, 0.1]


def test_updates_refuse_what_does_not_fit_and_change_nothing(mode):
    w, g = nd.array([1.0, 2.0]), nd.array([1.0, 1.0])
    z, n = nd.array([0.5, 0.5]), nd.array([1.0, 1.0])
    with pytest.raises(MXNetError, match="n .3,. float32 does not fit weight .2,. float32"):
        nd.ftrl_update(w, g, z, nd.zeros(3), lr=0.1, out=w)
    with pytest.raises(MXNetError, match="delta .2,. float64 does not fit weight"):
        nd.rmspropalex_update(w, g, nd.ones(2), nd.zeros(2), nd.zeros(2, dtype="float64"), lr=0.1, out=w)
    with pytest.raises(MXNetError, match="gradient .2,. float16 does not fit weight"):
        nd.signsgd_update(w, g.astype("float16"), lr=0.1, out=w)
    h, h32 = w.astype("float16"), nd.array([1.0, 2.0])
    with pytest.raises(MXNetError, match=r"weight32 \(2,\) float16 does not fit weight .* \(a float32 weight32"):
        nd.mp_sgd_update(h, g.astype("float16"), h32.astype("float16"), lr=0.1, out=h)
    with pytest.raises(MXNetError, match="mom .2,. float16 does not fit weight"):
        nd.mp_sgd_mom_update(h, g.astype("float16"), nd.zeros(2, dtype="float16"), h32, lr=0.1, out=h)
    d, v, zz = nd.zeros(2), nd.zeros(2), nd.zeros(2)
    for bad, message in (
        ({"beta1": 1.5}, "beta1 must be in .0, 1., got 1.5"),
        ({"beta2": -0.1}, "beta2 must be in .0, 1., got -0.1"),
        ({"t": 1.5}, "attribute 't': expected an integer"),
        ({"clip_gradient": 1.0}, "unknown attribute 'clip_gradient'"),  # (FTML's is clip_grad, as MXNet's)
    ):
        with pytest.raises(MXNetError, match=message):
            nd.ftml_update(w, g, d, v, zz, **{"lr": 0.1, "t": 1, **bad}, out=w)
    with pytest.raises(MXNetError, match="missing required attribute 't'"):
        nd.ftml_update(w, g, d, v, zz, lr=0.1, out=w)
    i = nd.array([1, 2], dtype="int32")
    with pytest.raises(MXNetError, match="must be a float array"):
        nd.signum_update(i, i, nd.zeros(2, dtype="int32"), lr=0.1, out=i).wait_to_read()
    with pytest.raises(MXNetError, match="must be arrays of their own"):
        nd.rmsprop_update(w, g, w[:], lr=0.1, out=w).wait_to_read()
    m = nd.zeros(2)
    m.attach_grad()
    with autograd.record():
        state = m * 2
        with pytest.raises(MXNetError, match="already in a computational graph"):
            nd.nag_mom_update(w, g, state, lr=0.1, out=w)
    assert w.asnumpy().tolist() == [1.0, 2.0] and z.asnumpy().tolist() == [0.5, 0.5]
    assert n.asnumpy().tolist() == [1.0, 1.0] and d.asnumpy().tolist() == [0.0, 0.0]
    nd.ftml_update(w, g, d, v, zz, lr=0.1, t=1, out=w)  # (the session goes on)
    np.testing.assert_allclose(w.asnumpy(), [0.9, 1.9], rtol=1e-6)


def test_a_lost_update_reports_every_state_it_would_have_changed():
    """The client knows which inputs each update writes: a batch that failed before it leaves
    them all stale, and reading any of them says so."""
    from gradserve.engine.errors import QuotaExceeded
    from gradserve.runtime import ChangeLost

    client = gradserve.connect()
    try:
        w, g, n, gs, delta = nd.ones(2), nd.ones(2), nd.ones(2), nd.zeros(2), nd.zeros(2)
        nd.waitall()
        nd.zeros((1 << 29,))  # (over the per-array limit: the batch fails here)
        nd.rmspropalex_update(w, g, n, gs, delta, lr=0.1, out=w)
        with pytest.raises(QuotaExceeded):
            nd.waitall()
        for stale in (w, n, gs, delta):
            with pytest.raises(ChangeLost, match="rmspropalex_update"):
                stale.asnumpy()
        assert g.asnumpy().tolist() == [1.0, 1.0]
    finally:
        gradserve.set_current(None)
        client.close()


def test_each_optimizer_update_of_the_engine_is_an_nd_function_that_names_its_states():
    """One table, the engine's: the nd functions take the weight, the gradient and its states
    in its order, and the client knows that each changes the weight and its states in place
    (so that a lost one raises ChangeLost instead of showing stale values)."""
    import inspect

    from gradserve.engine.optimizers import OPTIMIZERS
    from gradserve.engine.session import catalog
    from gradserve.runtime import _IN_PLACE

    commands = {c["name"]: c for c in catalog()["commands"]}
    assert {"sgd_update", "adam_update", "mp_sgd_mom_update", "ftml_update"} <= set(OPTIMIZERS)
    for name, (states, f32, scalars) in OPTIMIZERS.items():
        assert commands[name]["inputs"] == " ".join(("weight", "grad", *states, *scalars)), name
        params = list(inspect.signature(getattr(nd, name, None) or getattr(nd.contrib, name)).parameters)
        assert params[: 2 + len(states)] == ["weight", "grad", *states], name
        assert _IN_PLACE[name] == (0, *range(2, 2 + len(states))), name
        assert set(f32) <= set(states), name


# --------------------------------------------------------------------------
# Nesterov in multi-precision, LAMB, LARS and the multi_* forms (values: MXNet 1.9.1's)

G6 = [0.5, 4.0, -6.0, 0.0, 1.5, -0.3]


def test_mp_nag_mom_update_steps_the_float32_copy_and_its_momentum(mode):
    w, g = nd.array(WEIGHT, dtype="float16"), nd.array(G6, dtype="float16")
    mom, w32 = nd.array([0.1, 0.2, -0.3, 0.0, 0.05, -0.1]), nd.array(WEIGHT)
    at = {"lr": 0.1, "momentum": 0.9, "wd": 0.01, "rescale_grad": 0.5, "clip_gradient": 1.0}
    for _ in range(2):
        assert nd.mp_nag_mom_update(w, g, mom, w32, out=w, **at) is w
    assert w.dtype == np.float16
    want16 = [1.0341796875, -2.14453125, 2.986328125, 0.497802734375, -0.517578125, -0.0845947265625]
    assert w.asnumpy().tolist() == want16
    np.testing.assert_allclose(
        mom.asnumpy(), [0.031537592, -0.024034321, -0.058632784, -0.00094684260, -0.10116626, -0.052363515], rtol=1e-6
    )
    np.testing.assert_allclose(
        w32.asnumpy(), [1.0339544, -2.1439147, 2.9856291, 0.49769756, -0.51737237, -0.08459647], rtol=1e-6
    )
    fresh = nd.mp_nag_mom_update(w, g, mom, w32, **at)  # (out: a new array; the weight stays)
    assert fresh is not w and w.asnumpy().tolist() == want16


LAMB_FIRST = {  # weight G6-stepped from zero mean and var: t=1 (defaults, wd 0.01), then t=2 (the rest set)
    "float32": (
        [1.009998, 0.97999978, -0.96999985, 0.005, 0.99749935, -0.9999966],
        [1.3569481, 1.8391132, -2.2300608, 0.005, 1.3493037, -1.3421274],
        [0.09000000357627869, 0.5200001, -0.6800001, 0.0, 0.27000001, -0.054000005],
        [0.0064749988, 0.11439984, 0.1323996, 0.0, 0.058274988, 0.0023309998],
    ),
    "float16": (
        [1.009765625, 0.97998046875, -0.97021484375, 0.005001068115234375, 0.99755859375, -1.0],
        [1.3583984375, 1.84375, -2.240234375, 0.005001068115234375, 1.349609375, -1.34375],
        [0.090087890625, 0.5205078125, -0.6806640625, 0.0, 0.270263671875, -0.054046630859375],
        [0.00647735595703125, 0.1141357421875, 0.1317138671875, 0.0, 0.05828857421875, 0.002330780029296875],
    ),
}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_lamb_phase1_gives_the_direction_and_steps_mean_and_var(mode, dtype):
    w, g = nd.array(WEIGHT, dtype=dtype), nd.array(G6, dtype=dtype)
    mean, var = nd.zeros(6, dtype=dtype), nd.zeros(6, dtype=dtype)
    first = nd.lamb_update_phase1(w, g, mean, var, t=1, wd=0.01)
    second = nd.lamb_update_phase1(
        w, g, mean, var, t=2, wd=0.01, beta1=0.8, beta2=0.9, epsilon=1e-3, rescale_grad=0.5, clip_gradient=1.0
    )
    assert w.asnumpy().tolist() == WEIGHT and first.dtype == np.dtype(dtype)
    rtol = 1e-6 if dtype == "float32" else 0
    for got, want in zip((first, second, mean, var), LAMB_FIRST[dtype]):
        np.testing.assert_allclose(got.asnumpy(), np.array(want, dtype), rtol=rtol)


def test_lamb_phase1_without_bias_correction_and_phase2_with_its_bounds(mode):
    w, g = nd.array(WEIGHT), nd.array(G6)
    mean = nd.array([0.09, 0.52, -0.68, 0.0, 0.27, -0.054])
    var = nd.array([0.0064749988, 0.11439984, 0.1323996, 0.0, 0.058274988, 0.0023309998])
    d = nd.lamb_update_phase1(w, g, mean, var, t=3, wd=0.0, bias_correction=False)
    np.testing.assert_allclose(d.asnumpy(), [1.5981930, 2.4047558, -2.9546254, 0.0, 1.5982059, -1.5981799], rtol=1e-6)
    r1, r2 = w.norm(), d.norm()
    np.testing.assert_allclose([r1.asscalar(), r2.asscalar()], [3.7831864, 4.7090683], rtol=1e-6)
    for bounds, want in (
        ({}, [0.98716038, -2.0193193, 3.023737, 0.5, -0.2628397, 0.012839510]),
        ({"lower_bound": 4.0}, [0.98642457, -2.0204265, 3.0250974, 0.5, -0.26357555, 0.013575339]),
        ({"upper_bound": 1.0}, [0.99660611, -2.0051067, 3.0062742, 0.5, -0.25339389, 0.0033938347]),
    ):
        np.testing.assert_allclose(nd.lamb_update_phase2(w, d, r1, r2, lr=0.01, **bounds).asnumpy(), want, rtol=1e-6)
    zero = nd.lamb_update_phase2(w, d, r1 * 0, r2, lr=0.01)  # (a zero norm: lr as it is)
    np.testing.assert_allclose(
        zero.asnumpy(), [0.98401809, -2.0240476, 3.0295463, 0.5, -0.26598206, 0.015981799], rtol=1e-6
    )
    assert nd.lamb_update_phase2(w, d, r1, r2, lr=0.01, out=w) is w
    np.testing.assert_allclose(w.asnumpy(), [0.98716038, -2.0193193, 3.023737, 0.5, -0.2628397, 0.012839510], rtol=1e-6)


def test_lamb_phase2_in_float16_rounds_as_mxnet(mode):
    w = nd.array(WEIGHT, dtype="float16")
    d = nd.array([1.6005859375, 2.4140625, -2.96875, 0.0, 1.599609375, -1.6005859375], dtype="float16")
    r1, r2 = nd.array([3.78125], dtype="float16"), nd.array([4.7265625], dtype="float16")
    got = nd.lamb_update_phase2(w, d, r1, r2, lr=0.01, lower_bound=4.0)
    assert got.asnumpy().tolist() == [0.986328125, -2.01953125, 3.025390625, 0.5, -0.263427734375, 0.01354217529296875]


def test_lamb_refuses_what_does_not_fit(mode):
    w, g = nd.array([1.0, 2.0]), nd.array([1.0, 1.0])
    with pytest.raises(MXNetError, match="missing required attribute 't'"):
        nd.lamb_update_phase1(w, g, nd.zeros(2), nd.zeros(2), wd=0.1)
    with pytest.raises(MXNetError, match="missing required attribute 'wd'"):
        nd.lamb_update_phase1(w, g, nd.zeros(2), nd.zeros(2), t=1)
    with pytest.raises(MXNetError, match=r"mean \(1,\) float32 does not fit weight"):
        nd.lamb_update_phase1(w, g, nd.zeros(1), nd.zeros(2), t=1, wd=0.1)
    one = nd.array([1.0])
    with pytest.raises(MXNetError, match=r"r1 must hold one value .* got shape \(2,\)"):
        nd.lamb_update_phase2(w, g, w, one, lr=0.1).wait_to_read()
    with pytest.raises(MXNetError, match="r2 is float64, the weight float32"):
        nd.lamb_update_phase2(w, g, one, one.astype("float64"), lr=0.1).wait_to_read()
    with pytest.raises(MXNetError, match=r"g \(3,\) does not fit weight \(2,\)"):
        nd.lamb_update_phase2(w, nd.ones(3), one, one, lr=0.1).wait_to_read()
    i = nd.array([1, 2], dtype="int32")
    with pytest.raises(MXNetError, match="floating point"):
        nd.lamb_update_phase2(i, i, i[:1], i[:1], lr=0.1).wait_to_read()
    assert w.asnumpy().tolist() == [1.0, 2.0]


def test_multi_updates_step_each_weight_with_its_rates(mode):
    ws, gs = [nd.array([1.0, 2.0]), nd.array([3.0])], [nd.array([0.5, 0.5]), nd.array([1.0])]
    got = nd.multi_sgd_update(ws[0], gs[0], ws[1], gs[1], lrs=(0.1, 0.2), wds=(0.0, 0.5), num_weights=2, out=ws)
    assert got[0] is ws[0] and got[1] is ws[1]
    np.testing.assert_allclose(ws[0].asnumpy(), [0.95, 1.95], rtol=1e-6)
    np.testing.assert_allclose(ws[1].asnumpy(), [2.5], rtol=1e-6)
    fresh = nd.multi_sgd_update(ws[0], gs[0], lrs=(0.1,), wds=(0.0,))  # (one weight, no out: its new array)
    np.testing.assert_allclose(fresh.asnumpy(), [0.9, 1.9], rtol=1e-6)
    np.testing.assert_allclose(ws[0].asnumpy(), [0.95, 1.95], rtol=1e-6)

    ws, moms = [nd.array([1.0, 2.0]), nd.array([3.0])], [nd.array([0.1, -0.1]), nd.array([0.2])]
    nd.multi_sgd_mom_update(
        ws[0], gs[0], moms[0], ws[1], gs[1], moms[1], lrs=(0.1, 0.2), wds=(0.01, 0.5), momentum=0.9,
        rescale_grad=2.0, clip_gradient=0.8, num_weights=2, out=ws,
    )  # fmt: skip
    for got, want in zip((*ws, *moms), ([1.009, 1.828], [2.72], [0.009, -0.172], [-0.28])):
        np.testing.assert_allclose(got.asnumpy(), want, rtol=1e-5)

    hs = [nd.array([1.0, 2.0], dtype="float16"), nd.array([3.0], dtype="float16")]
    h32, hg = [nd.array([1.0, 2.0]), nd.array([3.0])], [g.astype("float16") for g in gs]
    nd.multi_mp_sgd_update(
        hs[0], hg[0], h32[0], hs[1], hg[1], h32[1], lrs=(0.1, 0.2), wds=(0.0, 0.5), num_weights=2, out=hs
    )
    assert [h.asnumpy().tolist() for h in hs] == [[0.9501953125, 1.9501953125], [2.5]]
    np.testing.assert_allclose(h32[0].asnumpy(), [0.95, 1.95], rtol=1e-6)

    hs = [nd.array([1.0, 2.0], dtype="float16"), nd.array([3.0], dtype="float16")]
    h32, ms = [nd.array([1.0, 2.0]), nd.array([3.0])], [nd.zeros(2), nd.zeros(1)]
    for _ in range(2):
        nd.multi_mp_sgd_mom_update(
            hs[0], hg[0], ms[0], h32[0], hs[1], hg[1], ms[1], h32[1], lrs=(0.1, 0.2), wds=(0.0, 0.5), momentum=0.5,
            num_weights=2, out=hs,
        )  # fmt: skip
    assert [h.asnumpy().tolist() for h in hs] == [[0.875, 1.875], [1.7998046875]]
    np.testing.assert_allclose(ms[0].asnumpy(), [-0.075, -0.075], rtol=1e-6)
    np.testing.assert_allclose(ms[1].asnumpy(), [-0.7], rtol=1e-6)


def test_multi_updates_refuse_a_bad_group_before_changing_any(mode):
    ws, gs = [nd.array([1.0, 2.0]), nd.array([3.0])], [nd.array([0.5, 0.5]), nd.array([1.0])]
    for args, kw, message in (
        ((ws[0], gs[0], ws[1], nd.ones(2)), {}, r"multi_sgd_update: weight 1: .*gradient \(2,\) float32 does not fit"),
        ((ws[0], gs[0], ws[1]), {}, r"num_weights 2 needs 4 arrays \(weight, grad for each weight\), got 3"),
        ((ws[0], gs[0], ws[1], gs[1]), {"lrs": (0.1,)}, r"lrs must be a sequence of 2 numbers"),
        ((ws[0], gs[0], ws[1], gs[1]), {"out": ws[:1]}, r"out must be a list of 2 NDArrays"),
        ((ws[0], gs[0], ws[1], gs[1]), {"num_weights": 0}, r"num_weights must be a positive integer"),
        ((ws[0], gs[0], ws[1], gs[1]), {"clip_gradient": "x"}, r"clip_gradient"),
    ):
        at = {"lrs": (0.1, 0.2), "wds": (0.0, 0.0), "num_weights": 2, "out": ws, **kw}
        with pytest.raises((MXNetError, TypeError), match=message):
            nd.multi_sgd_update(*args, **at)
    assert ws[0].asnumpy().tolist() == [1.0, 2.0] and ws[1].asnumpy().tolist() == [3.0]


def test_multi_sum_sq_and_multi_lars(mode):
    sums = nd.multi_sum_sq(nd.array(WEIGHT), nd.array(G6), nd.array([[1e-3]]), num_arrays=3)
    assert sums.dtype == np.float32
    np.testing.assert_allclose(sums.asnumpy(), [14.3125, 54.59, 1.0000001e-06], rtol=1e-6)
    half = nd.multi_sum_sq(nd.array(WEIGHT, dtype="float16"), num_arrays=1)
    assert half.dtype == np.float32 and half.asnumpy().tolist() == [14.3125]
    big = np.random.default_rng(0).standard_normal(1_000_003).astype(np.float32)  # (MXNet's float32 sum: 1000911.1)
    np.testing.assert_allclose(
        nd.multi_sum_sq(nd.array(big), num_arrays=1).asnumpy(), [np.sum(np.square(big, dtype=np.float64))], rtol=1e-7
    )
    lars = nd.multi_lars(
        nd.array([0.1, 0.2, 0.3, 0.4]), nd.array([4.0, 0.0, 9.0, 1.0]), nd.array([1.0, 1.0, 0.0, 4.0]),
        nd.array([0.0, 0.1, 0.1, 0.5]), eta=0.5, eps=0.1, rescale_grad=2,
    )  # fmt: skip
    np.testing.assert_allclose(lars.asnumpy(), [0.04761905, 0.2, 0.3, 0.04347826], rtol=1e-6)
    with pytest.raises(MXNetError, match="num_arrays is 2 but 1 arrays were given"):
        nd.multi_sum_sq(nd.ones(2), num_arrays=2).wait_to_read()
    with pytest.raises(MXNetError, match="inputs must have the same dtype"):
        nd.multi_sum_sq(nd.ones(2), nd.ones(2, dtype="float64"), num_arrays=2).wait_to_read()
    with pytest.raises(MXNetError, match="floating point"):
        nd.multi_sum_sq(nd.ones(2, dtype="int32"), num_arrays=1).wait_to_read()
    v = nd.ones(3)
    with pytest.raises(MXNetError, match=r"1-D arrays of one length, got grads_sum_sq \(2,\)"):
        nd.multi_lars(v, v, nd.ones(2), v, eta=1.0, eps=0.0).wait_to_read()


def test_adamw_steps_as_mxnets_and_skips_a_bad_scale(mode):
    at = {"lr": 0.1, "eta": 0.5, "wd": 0.01, "clip_gradient": 1.0}
    for scale in (nd.array([0.5]), 0.5):
        w, mean, var = nd.array(WEIGHT), nd.array([0.1, 0, 0, 0, 0, 0]), nd.array([0.01, 0, 0, 0, 0, 0])
        assert nd.contrib.adamw_update(w, nd.array(G6), mean, var, scale, out=w, **at) is w
        np.testing.assert_allclose(
            w.asnumpy(), [0.93765032, -2.1481149, 3.1431148, 0.4975, -0.40686488, 0.15811463], rtol=1e-6
        )
        np.testing.assert_allclose(mean.asnumpy(), [0.115, 0.1, -0.1, 0.0, 0.075, -0.015], rtol=1e-6)
        np.testing.assert_allclose(
            var.asnumpy(), [0.0100525, 0.00099998713, 0.00099998713, 0.0, 0.00056249276, 2.2499711e-05], rtol=1e-6
        )
    for scale in (0.0, float("inf"), float("nan")):  # (a dynamic loss scale's overflow: the step is skipped)
        w, mean, var = nd.array(WEIGHT), nd.array([0.1, 0, 0, 0, 0, 0]), nd.array([0.01, 0, 0, 0, 0, 0])
        fresh = nd.contrib.adamw_update(w, nd.array(G6), mean, var, nd.array([scale]), **at)
        assert fresh.asnumpy().tolist() == WEIGHT and w.asnumpy().tolist() == WEIGHT
        assert mean.asnumpy()[0] == np.float32(0.1) and var.asnumpy()[0] == np.float32(0.01)
    w, mean, var = nd.array(WEIGHT), nd.zeros(6), nd.zeros(6)
    for _ in range(3):
        nd.contrib.adamw_update(
            w, nd.array(G6), mean, var, 1.0, lr=0.01, eta=1.0, wd=0.1, beta1=0.8, beta2=0.9, epsilon=1e-3, out=w
        )
    np.testing.assert_allclose(
        w.asnumpy(), [0.70717186, -1.4799174, 2.2089217, 0.3645, -0.20414606, 0.021760685], rtol=1e-6
    )
    np.testing.assert_allclose(var.asnumpy(), [0.06775, 4.336001, 9.756002, 0.0, 0.60975015, 0.024390006], rtol=1e-6)


def test_mp_adamw_and_the_multi_forms(mode):
    h, w32, mean, var = nd.array(WEIGHT, dtype="float16"), nd.array(WEIGHT), nd.zeros(6), nd.zeros(6)
    g = nd.array(G6, dtype="float16")
    nd.contrib.mp_adamw_update(h, g, mean, var, w32, nd.array([1.0]), lr=0.01, eta=1.0, wd=0.1, out=h)
    want16 = [0.8681640625, -1.83203125, 2.732421875, 0.449951171875, -0.256591796875, 0.0316162109375]
    assert h.dtype == np.float16 and h.asnumpy().tolist() == want16
    np.testing.assert_allclose(
        w32.asnumpy(), [0.86837703, -1.831623, 2.7316229, 0.45, -0.25662297, 0.031622954], rtol=1e-6
    )
    np.testing.assert_allclose(mean.asnumpy(), [0.05, 0.4, -0.6, 0.0, 0.15, -0.030004891], rtol=1e-6)

    ws = [nd.array([1.0, 2.0]), nd.array([3.0])]
    gs, ms, vs = [nd.array([0.5, -1.0]), nd.array([2.0])], [nd.zeros(2), nd.zeros(1)], [nd.zeros(2), nd.zeros(1)]
    got = nd.contrib.multi_adamw_update(ws, gs, ms, vs, 1.0, lrs=[0.1, 0.2], wds=[0.0, 0.5], etas=[1.0, 0.5], out=ws)
    assert got[0] is ws[0] and got[1] is ws[1]
    for i in range(2):  # (each as its own adamw_update)
        w, m, v = nd.array([[1.0, 2.0], [3.0]][i]), nd.zeros(ms[i].shape), nd.zeros(vs[i].shape)
        lr, wd, eta = (0.1, 0.0, 1.0) if i == 0 else (0.2, 0.5, 0.5)
        nd.contrib.adamw_update(w, gs[i], m, v, 1.0, lr=lr, wd=wd, eta=eta, out=w)
        assert ws[i].asnumpy().tolist() == w.asnumpy().tolist() and ms[i].asnumpy().tolist() == m.asnumpy().tolist()
    with pytest.raises(MXNetError, match=r"multi_adamw_update: etas must be a list of 2"):
        nd.contrib.multi_adamw_update(ws, gs, ms, vs, 1.0, lrs=[0.1, 0.2], wds=[0.0, 0.5], etas=[1.0], out=ws)
    before = [w.asnumpy().tolist() for w in ws]
    with pytest.raises(MXNetError, match=r"multi_adamw_update: weight 1: .*var \(2,\) float32 does not fit"):
        nd.contrib.multi_adamw_update(ws, gs, ms, [vs[0], nd.zeros(2)], 1.0, lrs=[0.1, 0.2], wds=[0, 0], etas=[1, 1])
    assert [w.asnumpy().tolist() for w in ws] == before
    hs, h32s = [nd.array([1.0], dtype="float16")], [nd.array([1.0])]
    nd.contrib.multi_mp_adamw_update(
        hs, [nd.array([0.5], dtype="float16")], [nd.zeros(1)], [nd.zeros(1)], h32s, 1.0, lrs=[0.1], wds=[0.0],
        etas=[1.0], out=hs,
    )  # fmt: skip
    np.testing.assert_allclose(h32s[0].asnumpy(), [1 - 0.1 * 0.05 / (0.00025**0.5 + 1e-8)], rtol=1e-5)
    assert hs[0].asnumpy().tolist() == [np.float16(h32s[0].asscalar())]


def test_adamw_refuses_a_scale_that_is_not_one_float32(mode):
    w, g, m, v = nd.array([1.0, 2.0]), nd.ones(2), nd.zeros(2), nd.zeros(2)
    with pytest.raises(MXNetError, match=r"rescale_grad must be a float32 array of one value, got \(2,\) float32"):
        nd.contrib.adamw_update(w, g, m, v, nd.ones(2), lr=0.1, eta=1.0, out=w)
    with pytest.raises(MXNetError, match="rescale_grad must be a float32 array of one value, got .1,. float64"):
        nd.contrib.adamw_update(w, g, m, v, nd.ones(1, dtype="float64"), lr=0.1, eta=1.0, out=w)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'eta'"):  # (as MXNet's)
        nd.contrib.adamw_update(w, g, m, v, 1.0, lr=0.1, out=w)
    with pytest.raises(TypeError, match="rescale_grad must be a number or an NDArray"):
        nd.contrib.adamw_update(w, g, m, v, "1", lr=0.1, eta=1.0, out=w)
    assert w.asnumpy().tolist() == [1.0, 2.0]


def test_an_update_refuses_an_out_it_would_spoil_before_anything_changes(mode):
    """out is written with the weight before the command runs: an out that is a state, the
    gradient or of another shape or dtype is refused at the call, and nothing changes."""
    w, g, m, v = nd.array([5.0, 6.0, 7.0]), nd.ones(3), nd.array([0.1, 0.2, 0.3]), nd.array([0.01] * 3)
    for out, message in (
        (m, "out must not be the mean"),
        (g, "out must not be the gradient"),
        (m[:], "out must not be the mean"),
        (nd.zeros(3, dtype="float64"), r"out \(3,\) float64 does not fit weight \(3,\) float32"),
        (nd.zeros(2), r"out \(2,\) float32 does not fit weight"),
    ):
        with pytest.raises(MXNetError, match=message):
            nd.contrib.adamw_update(w, g, m, v, 1.0, lr=0.1, eta=1.0, out=out)
    with pytest.raises(MXNetError, match="out must not be the gradient"):
        nd.sgd_mom_update(w, g, m, lr=0.1, momentum=0.9, out=g)
    assert m.asnumpy().tolist() == [np.float32(0.1), np.float32(0.2), np.float32(0.3)]
    assert g.asnumpy().tolist() == [1, 1, 1] and w.asnumpy().tolist() == [5, 6, 7]


def test_a_recorded_gradient_is_only_read(mode):
    """The gradient an update reads may be in a graph (MXNet's and the REST command's rule):
    only the arrays it writes may not."""
    w, m, v, g0 = nd.array([1.0, 2.0]), nd.zeros(2), nd.zeros(2), nd.array([0.5, -1.0])
    g0.attach_grad()
    with autograd.record():
        g = g0 * 2
        nd.contrib.adamw_update(w, g, m, v, 1.0, lr=0.1, eta=1.0, out=w)
        nd.sgd_update(w, g, lr=0.1, out=w)
    ref, rm, rv, rg = nd.array([1.0, 2.0]), nd.zeros(2), nd.zeros(2), nd.array([1.0, -2.0])
    nd.contrib.adamw_update(ref, rg, rm, rv, 1.0, lr=0.1, eta=1.0, out=ref)
    nd.sgd_update(ref, rg, lr=0.1, out=ref)
    assert w.asnumpy().tolist() == ref.asnumpy().tolist() and m.asnumpy().tolist() == rm.asnumpy().tolist()


def test_a_hybridized_step_takes_rescale_grad_as_a_number(mode):
    w, m, v = nd.array([1.0, 2.0]), nd.zeros(2), nd.zeros(2)
    plain = [nd.array([1.0, 2.0]), nd.zeros(2), nd.zeros(2)]

    @gradserve.hybridize
    def step(g):
        nd.contrib.adamw_update(w, g, m, v, rescale_grad=0.5, lr=0.1, eta=1.0, out=w)

    for _ in range(2):
        g = nd.array([0.5, -1.0])
        step(g)
        nd.contrib.adamw_update(plain[0], g, plain[1], plain[2], 0.5, lr=0.1, eta=1.0, out=plain[0])
    assert w.asnumpy().tolist() == plain[0].asnumpy().tolist() and m.asnumpy().tolist() == plain[1].asnumpy().tolist()


def test_an_update_refuses_arrays_of_another_session_and_an_out_sharing_a_states_memory():
    """A handle names an array of its own session: another session's gradient or state named
    whatever array had that number here (sgd_mom_update wrote into an unrelated array). An out
    that is another view of a state's array would be written before the server could refuse it."""
    c1 = gradserve.connect(seed=0)
    c2 = gradserve.Client(gradserve.from_env(None, None, 1, True, 300.0))  # (a second session, not made current)
    try:
        gradserve.set_current(c2)
        g2, m2 = nd.array([7.0, 7.0, 7.0]), nd.array([5.0, 5.0, 5.0])
        gradserve.set_current(c1)
        w, other = nd.array([1.0, 2.0, 3.0]), nd.array([100.0, 200.0, 300.0])
        with pytest.raises(MXNetError, match="arrays from different sessions cannot be mixed"):
            nd.sgd_update(w, g2, lr=0.1, out=w)
        with pytest.raises(MXNetError, match="arrays from different sessions cannot be mixed"):
            nd.sgd_mom_update(w, nd.ones(3), m2, lr=0.1, momentum=0.9, out=w)
        with pytest.raises(MXNetError, match=r"different sessions cannot be mixed \(rescale_grad\)"):
            nd.contrib.adamw_update(w, nd.ones(3), nd.zeros(3), nd.zeros(3), m2[:1], lr=0.1, eta=1.0, out=w)
        big = nd.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        with pytest.raises(MXNetError, match="out must not be the mom or share its memory"):
            nd.sgd_mom_update(w, nd.ones(3), big[0:3], lr=0.1, momentum=0.9, out=big[0:3])
        assert big.asnumpy().tolist() == np.float32([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]).tolist()
        assert w.asnumpy().tolist() == [1, 2, 3] and other.asnumpy().tolist() == [100, 200, 300]
        assert m2.asnumpy().tolist() == [5, 5, 5]
    finally:
        gradserve.set_current(None)
        c1.close()
        c2.close()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_an_updates_working_arrays_stay_within_a_few_chunks_whatever_the_weight(dtype):
    """No command declares its working arrays to the quota: an update steps its arrays a chunk
    at a time (UPDATE_CHUNK elements), so what it makes besides them stays within a few MB
    (float16 adamw_update made 12 times its weight's bytes, adam_update 3 times)."""
    import tracemalloc

    from gradserve.engine.optimizers import OPTIMIZERS, UPDATE_CHUNK
    from gradserve.engine.session import Limits, Session

    from .test_quota import ok

    n = 1 << 21  # (8 chunks)
    required = {"lamb_update_phase1": {"t": 1, "wd": 0.01}, "ftml_update": {"lr": 0.1, "t": 1}}
    for name, (states, f32, scalars) in OPTIMIZERS.items():
        if name == "sgd_update":  # (numba's kernel, or numpy's on the whole weight where numba is missing)
            continue
        s = Session("m", limits=Limits(max_session_bytes=1 << 34, max_array_bytes=1 << 33))
        arrays = [np.full(n, 0.5, dtype), np.full(n, 0.1, dtype)]
        arrays += [np.full(n, 0.2, "float32" if k in f32 else dtype) for k in states]
        arrays += [np.ones(1, np.float32) for _ in scalars]
        hs = list(range(1, len(arrays) + 1))
        ok(s, *[{"op": "array", "out": [h], "at": {"value": v}} for h, v in zip(hs, arrays)])
        at = required.get(name, {"lr": 0.1, **({"eta": 1.0} if "adamw" in name else {})})
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            ok(s, {"op": name, "in": hs, "at": at})
            made = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        assert made <= 32 * UPDATE_CHUNK, (
            name,
            made,
        )  # (float32 sgd_mom_update made 64 times a chunk's elements, whole)
