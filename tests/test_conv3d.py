"""MXNet 1.9.1 parity of 3-D (volumetric) Convolution, Deconvolution and Pooling: (N, C, D, H, W)
data with three-value kernel, stride, dilate, pad and adj. Values and gradients recorded from
MXNet as literals (the tests do not need MXNet), the inputs it refuses with the substance of its
messages, and what gradserve computes where MXNet 1.9.1's CPU build fails. tests/test_ops.py
holds their finite-difference cases (the ``-3d`` variants)."""

from __future__ import annotations

import numpy as np
import pytest

from gradserve import autograd, nd
from gradserve.engine import OPS
from gradserve.engine.errors import DTypeError, InvalidInput, MXNetError, ShapeError
from gradserve.engine.optable import Spec

from .test_ops_vision import grads, run


def lin(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """-1 to 1 in even steps, in ``shape`` (the data of the recorded cases)."""
    return np.linspace(-1, 1, int(np.prod(shape))).reshape(shape).astype(dtype)


def sin(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """sin(0), sin(1), ... in ``shape`` (the filters of the recorded cases)."""
    return np.sin(np.arange(int(np.prod(shape)))).reshape(shape).astype(dtype)


def cos(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """cos(0), cos(1), ... in ``shape`` (the head gradients of the recorded cases)."""
    return np.cos(np.arange(int(np.prod(shape)))).reshape(shape).astype(dtype)


def refused(name: str, at: dict, *specs: tuple) -> MXNetError:
    """The error the op's inference (the client's and the server's) gives these inputs."""
    op = OPS[name]
    with pytest.raises(MXNetError) as e:
        op.infer(op.parse_attrs(at), *[Spec(s, d) for s, d in specs])
    return e.value


# --------------------------------------------------------------------------
# values and gradients recorded from MXNet 1.9.1

PX = np.sin(np.arange(48) * 1.3).reshape(1, 1, 3, 4, 4)  # the pooled data: distinct values
POOL = {"kernel": [2, 2, 3], "stride": [1, 2, 1], "pad": [1, 0, 1]}

CASES = [  # key, op, inputs, attributes, dtype
    (
        "C1",
        "Convolution",
        lambda dt: (lin((1, 2, 3, 3, 4), dt), sin((3, 2, 2, 2, 2), dt), np.array([0.1, -0.2, 0.3], dt)),
        {"kernel": [2, 2, 2], "stride": [1, 2, 1], "pad": [1, 0, 1], "dilate": [1, 1, 2], "num_filter": 3},
        "float32",
    ),
    (
        "C2",
        "Convolution",
        lambda dt: (
            lin((1, 4, 3, 3, 3)).astype(dt),
            sin((4, 2, 2, 2, 2)).astype(dt),
        ),  # (float32 values, as MXNet ran them)
        {"kernel": [2, 2, 2], "stride": [1, 1, 2], "num_filter": 4, "num_group": 2, "no_bias": True},
        "float64",
    ),
    (
        "D1",
        "Deconvolution",
        lambda dt: (lin((1, 2, 2, 2, 3), dt), sin((2, 2, 2, 3, 2), dt), np.array([0.5, -0.5], dt)),
        {
            "kernel": [2, 3, 2],
            "stride": [2, 1, 2],
            "pad": [1, 0, 1],
            "adj": [1, 0, 1],
            "num_filter": 2,
            "no_bias": False,
        },
        "float32",
    ),
    (
        "D2",
        "Deconvolution",
        lambda dt: (lin((1, 2, 2, 2, 2), dt), sin((2, 1, 2, 2, 2), dt)),
        {"kernel": [2, 2, 2], "stride": [2, 2, 2], "target_shape": [4, 4, 4], "num_filter": 2, "num_group": 2},
        "float32",
    ),
    ("Pmax", "Pooling", lambda dt: (PX.astype(dt),), {**POOL, "pool_type": "max"}, "float32"),
    ("Pavg", "Pooling", lambda dt: (PX.astype(dt),), {**POOL, "pool_type": "avg"}, "float32"),
    (
        "Pavg_nocip",
        "Pooling",
        lambda dt: (PX.astype(dt),),
        {**POOL, "pool_type": "avg", "count_include_pad": False},
        "float32",
    ),
    ("Psum", "Pooling", lambda dt: (PX.astype(dt),), {**POOL, "pool_type": "sum"}, "float32"),
    ("Pgmax", "Pooling", lambda dt: (PX.astype(dt),), {"global_pool": True, "pool_type": "max"}, "float32"),
    (
        "Pgavg",
        "Pooling",
        lambda dt: (PX.astype(dt),),
        {"global_pool": True, "kernel": [1, 1, 1], "pool_type": "avg"},
        "float32",
    ),
    ("Pmax16", "Pooling", lambda dt: (PX.astype("float32").astype(dt),), {**POOL, "pool_type": "max"}, "float16"),
    ("Pavg16", "Pooling", lambda dt: (PX.astype("float32").astype(dt),), {**POOL, "pool_type": "avg"}, "float16"),
    (
        "Pavg64",
        "Pooling",
        lambda dt: (PX.astype(dt),),
        {**POOL, "pool_type": "avg", "count_include_pad": False},
        "float64",
    ),
]

MX = {  # MXNet 1.9.1: the output, then each input's gradient (head gradient cos(0, 1, ...)), flat
    "C1": (
        """
        0.5859614 1.7303569 1.7356058 1.1899481 -0.23078427 -0.1339314 -0.07940505 0.20760393 0.16242242 0.5203855
        0.57491183 0.4687141 -0.7096736 -0.6446127 -0.59533507 0.23025948 -0.3766916 -1.4335556 -1.4586334
        -1.2159858 0.20729883 0.25216758 0.19414873 -0.1811918 -0.1526107 -0.4440604 -0.5020794 -0.51751035
        0.75658005 0.99607426 0.96313316 -0.027444556 0.15245953 1.0322955 1.0750788 1.1559887 -0.14932278
        -0.33211392 -0.27551544 0.15637231 0.14681198 0.34706807 0.40366668 0.5394194 -0.72248226 -1.2462511
        -1.232436 -0.16075826
        """,
        [
            """
            -0.06718075 -0.7934004 3.639407 4.221903 0.9217702 4.2834053 1.4320157 -2.0733426 0. 0. 0. 0. -2.3036604
            -3.140153 -4.8609676 -4.099931 -1.9428201 -2.006281 2.2205124 2.5473175 0. 0. 0. 0. 3.0787268 4.8984823
            2.7152739 1.1378841 1.6180536 -1.6606194 -4.334863 -1.2567328 0. 0. 0. 0. 0.9822854 4.4167433 2.6764436
            -0.958557 -0.47838765 -1.6994498 -4.816602 -3.3531742 0. 0. 0. 0. -2.8217647 -3.1478567 0.92230844
            1.5117441 3.6688552 4.616966 3.9604564 2.9368894 0. 0. 0. 0. 2.7065716 -0.30159062 -3.8821657 -1.017727
            -4.3178596 -4.3362513 -0.36085153 -0.48618403 0. 0. 0. 0.
            """,
            """
            -0.9270545 0.09191626 -0.8666088 0.15755287 0.08756328 -0.92492974 0.018393934 -0.9453643 -0.38304392
            0.6826458 -0.3225984 0.74828243 -0.5349613 -1.1088414 -0.6041308 -1.129276 1.0850127 0.24098206
            1.0384095 0.16957706 -0.41475296 0.6907419 -0.34271702 0.7301997 0.6655836 -0.40166253 0.6189804
            -0.47306728 0.23356968 1.0458612 0.30560565 1.0853189 -1.1510907 -0.5534737 -1.1222762 -0.4823471
            0.70682114 -0.3980614 0.63801885 -0.45320088 -0.89176095 0.08666581 -0.86294657 0.15779239 0.08760095
            -0.8943162 0.018798769 -0.94945556
            """,
            """
            0.7153281 -0.12774992 -0.47064644
            """,
        ],
    ),
    "C2": (
        """
        -1.099656841835075 -0.9911136847773445 -0.774027245226673 -0.6654839537408286 1.2696277960400835
        1.154132114922782 0.9231405566500677 0.8076446643033831 0.6959392430289031 0.8086072637368296
        1.0339434104478453 1.1466113528969992 -0.5236495095728395 -0.6239488931925037 -0.8245478607660446
        -0.9248472580600566
        """,
        [
            """
            0.18818616126736118 1.4698822795572253 0. 1.318508138248987 0.22509031350522846 0. 0.2782688061376632
            0.11876195796913183 0. -1.629979554183033 -2.779079660429376 0. -1.7400917896033725 -0.5433369191549484
            0. -1.6198481911055247 0.08821565447758728 0. 1.1915238880811703 1.2023851746080785 0.
            1.5452794005808939 0.49416580173839186 0. 0.2699462147542454 -1.2883792912720646 0. 1.5812837742474681
            0.49862937559282333 0. -0.7647884017786735 -1.4399938834839605 0. -0.07762687139437409
            -0.26900933037041186 0. -1.9948765286558245 0.5553650517530362 0. 0.7197659152382009 1.7798059193608544
            0. 1.3684316203704154 1.947738638636841 0. 0.48340882137140617 -0.8120527155702439 0.
            -0.6254770715367732 -1.5748374753557746 0. -1.7255731441490108 -0.948385007048439 0. -0.7285273221116714
            -0.950315145521525 0. -1.4979593670965943 -1.1486535491190462 0. -0.7201544846091483 0.9983275077792171
            0. 0.40913799071905244 -0.5416732078977057 0. 1.3905532956508704 1.1416492896471033 0.
            -0.5754371580336932 -2.2964277366921335 0. 0.9670821071646248 0.5941122177674376 0. -1.0790000517980174
            -1.2490246540108563 0. 0.4258169434552933 0.7637673660087512 0. -0.548526873239102 0.39113896835235884
            0. -0.1809814761995464 1.1986593671378278 0. 1.7360496146932924 1.335661015939253 0. -0.9563099252380658
            -0.7463330983848737 0. 0.2566044761270201 -1.0758073539081552 0. -2.2507433946445032
            -0.44812816861445903 0. -0.056532137228645654 -0.8460731704459381 0. -0.6260991614390216
            0.6569109190695623 0. 0.5655376740252214 -0.12659120611830615 0.
            """,
            """
            -3.9592606160659533e-01 -3.9341834107034213e-01 -3.8840290059432953e-01 -3.8589518005807627e-01
            -3.7335658537354638e-01 -3.7084886483729324e-01 -3.6583343116502959e-01 -3.6332571062877633e-01
            -3.2821764341131887e-01 -3.2570992287506573e-01 -3.2069448580092752e-01 -3.1818675051263634e-01
            -3.0564817058014443e-01 -3.0314042909078237e-01 -2.9812500928174351e-01 -2.9561728137552740e-01
            -9.9756129531725735e-01 -9.7243808285600541e-01 -9.2219166390938179e-01 -8.9706845144812997e-01
            -7.7145246925594313e-01 -7.4632925679469131e-01 -6.9608290601038014e-01 -6.7095969354912821e-01
            -3.1923492236472378e-01 -2.9411170990347191e-01 -2.4386532503800445e-01 -2.1874212381077160e-01
            -9.3126130384565908e-02 -6.8002943464985227e-02 -1.7756535866351359e-02 7.3666510390905000e-03
            -2.0892643091637961e-01 -2.4427739822583885e-01 -3.1497930132104263e-01 -3.5033025660344358e-01
            -5.2708502216485309e-01 -5.6243598424600449e-01 -6.3313787919768405e-01 -6.6848885268761482e-01
            -1.1634022345463491e+00 -1.1987532015319216e+00 -1.2694551028354615e+00 -1.3048060241859161e+00
            -1.4815607897473260e+00 -1.5169117654053761e+00 -1.5876137083127908e+00 -1.6229646839708411e+00
            -8.5964571976561738e-02 -6.4873909849011147e-02 -2.2692594858201524e-02 -1.6019429448253318e-03
            1.0385132479590513e-01 1.2494197827302121e-01 1.6712327864382301e-01 1.8821393306854603e-01
            4.8348315070833436e-01 5.0457376740984572e-01 5.4675509325792604e-01 5.6784570616900965e-01
            6.7329897390974036e-01 6.9438964090886701e-01 7.3657096989043358e-01 7.5766163688956034e-01
            """,
        ],
    ),
    "D1": (
        """
        -1.7455345e-01 6.2624478e-01 -1.5255791e-01 5.1603198e-01 -1.3056231e-01 -4.7721082e-01 -5.3579545e-01
        -3.3243006e-01 -5.1202691e-01 -1.8764925e-01 1.4810853e+00 6.3626772e-01 1.4796816e+00 7.6895005e-01
        1.4782779e+00 1.1088068e+00 1.0618289e+00 9.8461783e-01 1.0605297e+00 8.6042881e-01 2.2749841e-02
        -9.0594590e-02 8.4412396e-02 -1.6934055e-01 1.4607495e-01 6.8080556e-01 -1.8532372e-01 8.3790261e-01
        -1.1869085e-01 9.9499959e-01 1.3428900e+00 1.5504628e+00 1.2972324e+00 1.6535897e+00 1.2515748e+00
        1.6024253e-01 8.4606212e-01 1.9150496e-02 8.0381024e-01 -1.2194151e-01 -4.2580068e-02 -3.5031974e-02
        -2.0584583e-02 -1.4524478e-01 1.4110208e-03 3.9147401e-01 -3.9318442e-01 5.3625476e-01 -3.6941588e-01
        6.8103564e-01 1.4726630e+00 1.4323616e+00 1.4712594e+00 1.5650439e+00 1.4698557e+00 3.6367306e-01
        1.0540348e+00 2.3948410e-01 1.0527358e+00 1.1529517e-01 -6.8604136e-01 6.6137731e-02 -7.4533677e-01
        -7.8863055e-02 -8.0463219e-01 -1.6635875e+00 -1.2001144e+00 -1.5761386e+00 -1.2641892e+00 -1.4886898e+00
        -7.8338385e-03 -9.6276605e-01 7.6071501e-02 -8.0419350e-01 1.5997690e-01 1.6307652e-01 -1.4135370e-01
        1.0023761e-01 -6.3706994e-02 3.7398696e-02 -1.0646884e+00 -9.3684900e-01 -1.0841119e+00 -1.0697491e+00
        -1.1035355e+00 -8.8921237e-01 -1.5298946e+00 -7.6828092e-01 -1.5508838e+00 -6.4734942e-01 5.2495432e-01
        2.3998898e-01 5.6791639e-01 3.9165723e-01 6.1087835e-01 -4.2203668e-01 2.1787328e-01 -5.1942974e-01
        2.5763065e-01 -6.1682278e-01 -1.0418140e+00 -8.0386686e-01 -1.1011094e+00 -9.4886762e-01 -1.1604048e+00
        -1.1388946e+00 -1.5845640e+00 -1.0514457e+00 -1.6486388e+00 -9.6399683e-01 4.9559844e-01 -1.1330783e-02
        5.7950377e-01 1.4724171e-01 6.6340923e-01 -2.1395689e-01 3.2452655e-01 -2.7679580e-01 4.0217322e-01
        -3.3963469e-01
        """,
        [
            """
            0.46369946 -0.23977727 -0.89017475 0.26581216 0.97597075 -0.8960337 -0.33397716 -1.5767257 1.1722698
            0.439882 -0.99154603 -0.8157895 0.63073575 -0.6214971 -0.34660828 0.49230963 0.4619794 -0.9058484
            -0.6792171 -1.1325867 1.4558607 0.75511515 -1.3595442 -0.14250961
            """,
            """
            0.33396706 -0.077828154 -0.07891232 -0.23751898 -0.37873593 -0.056922123 0.08214754 -0.093073845
            -0.9652103 -0.33365655 -0.62973493 -0.09621753 -0.373271 0.005642578 -0.038115352 0.22953883 0.3516472
            0.12458038 -0.39245415 -0.0090215355 0.8061368 0.31727916 0.8497951 0.18902169 -1.1229883 -0.30394298
            0.5323354 -0.14265531 1.4249952 0.2230112 -1.106967 -0.27762067 -0.4663319 -0.25623223 0.8424057
            0.13225378 1.3400168 0.27153933 -0.10204297 0.21961743 -1.3979084 -0.14694503 1.00587 0.20799382
            0.75396144 0.30918163 -0.5781295 -0.03258753
            """,
            """
            0.6972305 -0.0729202
            """,
        ],
    ),
    "D2": (
        """
        0. -0.84147096 0. -0.7292748 -0.9092974 -0.14112 -0.78805774 -0.122304 0. -0.6170787 0. -0.5048826
        -0.66681814 -0.103488006 -0.5455785 -0.084672004 0.7568025 0.9589243 0.65589553 0.83106774 0.2794155
        -0.6569866 0.2421601 -0.5693884 0.5549885 0.7032112 0.4540815 0.5753546 0.20490469 -0.48179018 0.1676493
        -0.39419198 0. -0.39268646 0. -0.28049034 -0.4243388 -0.065856 -0.30309916 -0.04704 0. -0.16829419 0.
        -0.056098066 -0.18185948 -0.028224 -0.06061983 -0.009408001 0.3531745 0.447498 0.2522675 0.31964144
        0.13039389 -0.30659375 0.0931385 -0.21899554 0.1513605 0.19178486 0.050453503 0.06392829 0.0558831
        -0.13139732 0.0186277 -0.04379911 0.06595722 0.027474567 0.19787166 0.0824237 -0.036268078 -0.06666602
        -0.108804226 -0.19999805 0.3297861 0.13737284 0.46170053 0.19232197 -0.18134038 -0.3333301 -0.25387654
        -0.4666621 -0.03577153 0.028011138 -0.10731459 0.08403341 0.06604049 0.043352526 0.19812147 0.13005757
        -0.17885765 0.14005569 -0.2504007 0.19607794 0.33020246 0.21676263 0.46228343 0.30346766 0.593615 0.2472711
        0.7255294 0.30222023 -0.32641268 -0.5999942 -0.39894885 -0.7333262 0.8574438 0.35716936 0.98935825 0.4121185
        -0.471485 -0.8666582 -0.5440211 -0.9999902 -0.32194376 0.25210023 -0.39348683 0.3081225 0.59436446
        0.39017275 0.72644544 0.47687778 -0.46502987 0.36414477 -0.53657293 0.42016703 0.8585264 0.56358284
        0.9906074 0.65028787
        """,
        [
            """
            0.41506732 -1.3720608 -1.3653215 0.3692738 -0.3810538 -1.0500555 -1.2596027 1.0428393 -2.005134
            -1.6522269 -2.4138525 3.1701863 -3.1807172 0.25461397 -0.7003619 3.3084373
            """,
            """
            0.024409369 1.4510849 -1.309171 -1.6316752 -0.51534194 -1.649542 1.5699921 1.4162983 -1.2592899
            0.29176396 -0.051215976 -1.4650693 0.87335277 -0.7642033 0.5408426 1.656348
            """,
        ],
    ),
    "Pmax": (
        """
        0.9635582 0.9985433 0.9985433 0.9985433 0.10775365 0.42016703 0.98677194 0.98677194 0.9635582 0.9985433
        0.9985433 0.9985433 0.8838704 0.96379536 0.98677194 0.98677194 0.9287952 0.9287952 0.9985909 0.9985909
        0.9866276 0.9866276 0.96379536 0.96379536 0.3182565 0.3182565 0.9985909 0.9985909 0.9866276 0.9866276
        0.9284657 -0.10951945
        """,
        [
            """
            0. 0.85449994 0. 0. 0. 0. -2.611613 0. 0. 0. 0.2836622 1.0911218 -0.6536436 0. 0. 0. -1.2328229 0. 0. 0.
            0. 0. 0. 0. 0. 0.84385395 0. 0. 0. 0. -0.6253471 0. 0. 0. 0. 2.0038018 1.4153819 0. 0. 0. -1.8503106 0.
            0. 0. 0. 0.15425146 0.91474235 0.
            """,
        ],
    ),
    "Pavg": (
        """
        0.024601959 0.15077235 0.19367127 0.09544808 -0.20093171 -0.21632051 -0.023621798 0.11730384 0.22543903
        0.2427048 0.026502922 -0.13161121 -0.2253329 -0.10314532 0.18755762 0.25475335 0.027377352 -0.12697901
        -0.23693663 -0.15421404 0.19461636 0.24561174 0.07827785 -0.08173007 -0.17345972 -0.21891147 -0.06976831
        0.07284524 0.21901755 0.13243657 -0.13290158 -0.21917962
        """,
        [
            """
            0.04030601 -0.06429552 -0.21763444 -0.1867321 0.04030601 -0.06429552 -0.21763444 -0.1867321 0.11510995
            0.20651892 0.1901859 0.09092682 0.11510995 0.20651892 0.1901859 0.09092682 -0.19078775 -0.20568396
            -0.030993178 0.06786463 -0.19078775 -0.20568396 -0.030993178 0.06786463 0.13430446 0.06236916
            -0.14966892 -0.17964537 0.13430446 0.06236916 -0.14966892 -0.17964537 0.015213251 0.12414959 0.22665344
            0.16698349 0.015213251 0.12414959 0.22665344 0.16698349 -0.15419255 -0.22466832 -0.14663222 -0.038650014
            -0.15419255 -0.22466832 -0.14663222 -0.038650014
            """,
        ],
    ),
    "Pavg_nocip": (
        """
        0.073805876 0.3015447 0.38734254 0.28634423 -0.6027951 -0.43264103 -0.047243595 0.35191151 0.33815855
        0.2427048 0.026502922 -0.19741681 -0.33799934 -0.10314532 0.18755762 0.38213003 0.04106603 -0.12697901
        -0.23693663 -0.23132107 0.29192454 0.24561174 0.07827785 -0.1225951 -0.5203792 -0.43782294 -0.13953662
        0.21853572 0.65705264 0.26487315 -0.26580316 -0.65753883
        """,
        [
            """
            0.24593535 0.10665491 -0.37210247 -0.38622534 0.24593535 0.10665491 -0.37210247 -0.38622534 0.064968444
            0.2363916 0.38783532 0.26493773 0.064968444 0.2363916 0.38783532 0.26493773 -0.23675273 -0.251649
            0.010387249 0.10924506 -0.23675273 -0.251649 0.010387249 0.10924506 0.18646845 0.11453315 -0.20352396
            -0.23350042 0.18646845 0.11453315 -0.20352396 -0.23350042 0.12860751 0.29145378 0.35566983 0.21339965
            0.12860751 0.29145378 0.35566983 0.21339965 -0.35996157 -0.41758305 -0.06586039 0.104459964 -0.35996157
            -0.41758305 -0.06586039 0.104459964
            """,
        ],
    ),
    "Psum": (
        """
        0.2952235 1.8092682 2.3240552 1.1453769 -2.4111805 -2.5958462 -0.28346157 1.4076461 2.7052684 2.9124575
        0.31803507 -1.5793345 -2.7039948 -1.2377439 2.2506914 3.0570402 0.32852823 -1.523748 -2.8432395 -1.8505685
        2.3353963 2.947341 0.93933415 -0.9807608 -2.0815167 -2.6269376 -0.8372197 0.8741429 2.6282105 1.5892389
        -1.594819 -2.6301553
        """,
        [
            """
            0.48367196 -0.7715464 -2.611613 -2.2407851 0.48367196 -0.7715464 -2.611613 -2.2407851 1.3813193
            2.4782267 2.2822309 1.0911218 1.3813193 2.4782267 2.2822309 1.0911218 -2.2894533 -2.4682078 -0.37191802
            0.8143755 -2.2894533 -2.4682078 -0.37191802 0.8143755 1.6116536 0.7484301 -1.7960272 -2.1557446
            1.6116536 0.7484301 -1.7960272 -2.1557446 0.18255895 1.489795 2.7198412 2.0038018 0.18255895 1.489795
            2.7198412 2.0038018 -1.8503106 -2.6960201 -1.7595869 -0.46380007 -1.8503106 -2.6960201 -1.7595869
            -0.46380007
            """,
        ],
    ),
    "Pgmax": (
        """
        0.9985909
        """,
        [
            """
            0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0.
            1. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0. 0.
            """,
        ],
    ),
    "Pgavg": (
        """
        0.005617939
        """,
        [
            """
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334 0.020833334
            """,
        ],
    ),
    "Pmax16": (
        """
        0.9634 0.9985 0.9985 0.9985 0.1077 0.4202 0.987 0.987 0.9634 0.9985 0.9985 0.9985 0.884 0.964 0.987 0.987
        0.9287 0.9287 0.9985 0.9985 0.987 0.987 0.964 0.964 0.3184 0.3184 0.9985 0.9985 0.987 0.987 0.928 -0.1095
        """,
        [
            """
            0. 0.8545 0. 0. 0. 0. -2.613 0. 0. 0. 0.2837 1.091 -0.654 0. 0. 0. -1.232 0. 0. 0. 0. 0. 0. 0. 0. 0.8438
            0. 0. 0. 0. -0.6255 0. 0. 0. 0. 2.002 1.415 0. 0. 0. -1.85 0. 0. 0. 0. 0.1543 0.9146 0.
            """,
        ],
    ),
    "Pavg16": (
        """
        0.0246 0.1508 0.1936 0.09546 -0.2009 -0.2163 -0.02367 0.1173 0.2255 0.2427 0.02647 -0.1316 -0.2253 -0.1032
        0.1875 0.2546 0.0274 -0.127 -0.2369 -0.1542 0.1946 0.2456 0.07825 -0.0817 -0.1735 -0.2189 -0.0697 0.0729
        0.219 0.1324 -0.1329 -0.2191
        """,
        [
            """
            0.04034 -0.0642 -0.2177 -0.1866 0.04034 -0.0642 -0.2177 -0.1866 0.1151 0.2064 0.1904 0.0909 0.1151
            0.2064 0.1904 0.0909 -0.1908 -0.2057 -0.03088 0.0679 -0.1908 -0.2057 -0.03088 0.0679 0.1344 0.06244
            -0.1497 -0.1797 0.1344 0.06244 -0.1497 -0.1797 0.0152 0.12415 0.2266 0.167 0.0152 0.12415 0.2266 0.167
            -0.1542 -0.2247 -0.1467 -0.03857 -0.1542 -0.2247 -0.1467 -0.03857
            """,
        ],
    ),
    "Pavg64": (
        """
        0.07380587944621383 0.3015447058301541 0.3873425156444093 0.2863442300903618 -0.6027951033599034
        -0.4326410331698761 -0.04724359137313844 0.3519115121036428 0.33815856343912465 0.24270480872535158
        0.026502911024655115 -0.19741681829755575 -0.3379993247322138 -0.10314532091237721 0.18755762178712082
        0.38213005971841296 0.04106603695248613 -0.12697900620710628 -0.23693665739078618 -0.23132107728595855
        0.2919245242416743 0.24561176792425807 0.07827784782019725 -0.12259509418135515 -0.5203791735270633
        -0.43782292403476164 -0.1395366211864732 0.2185357121135562 0.6570525945878728 0.2648731445033945
        -0.2658031393069855 -0.6575387956958934
        """,
        [
            """
            0.24593535826155688 0.10665492474732877 -0.3721024829281996 -0.3862253454158331 0.24593535826155688
            0.10665492474732877 -0.3721024829281996 -0.3862253454158331 0.06496843565704591 0.2363915849494264
            0.38783531980224134 0.26493772377085395 0.06496843565704591 0.2363915849494264 0.38783531980224134
            0.26493772377085395 -0.23675273926118925 -0.2516489743305536 0.010387254457786183 0.10924505445247565
            -0.23675273926118925 -0.2516489743305536 0.010387254457786183 0.10924505445247565 0.18646846267039616
            0.11453316198816253 -0.20352395722910033 -0.23350041733126098 0.18646846267039616 0.11453316198816253
            -0.20352395722910033 -0.23350041733126098 0.12860750726677203 0.29145378667521876 0.35566984497126725
            0.21339965449832138 0.12860750726677203 0.29145378667521876 0.35566984497126725 0.21339965449832138
            -0.3599615688185734 -0.41758306270352913 -0.06586039194235338 0.10445996802450237 -0.3599615688185734
            -0.41758306270352913 -0.06586039194235338 0.10445996802450237
            """,
        ],
    ),
}


def values(text: str) -> np.ndarray:
    return np.array(text.split(), np.float64)


MX_CASE = {c[0]: (c[2], c[3]) for c in CASES}  # key: (inputs, attributes)


def tolerance(dtype: str) -> dict:
    return {"float16": {"rtol": 2e-3, "atol": 2e-3}, "float32": {"rtol": 1e-5, "atol": 1e-6}}.get(
        dtype, {"rtol": 1e-12, "atol": 1e-12}
    )


@pytest.mark.parametrize("key, name, inputs, at, dtype", CASES, ids=[c[0] for c in CASES])
def test_values_and_gradients_are_mxnets(key, name, inputs, at, dtype):
    """The output and every input's gradient (head gradient cos(0), cos(1), ... in the
    output's shape), in the dtype MXNet ran them in."""
    xs = inputs(dtype)
    want_y, want_grads = MX[key]
    y = run(name, at, *xs)
    assert y.dtype == np.dtype(dtype)
    np.testing.assert_allclose(y.ravel().astype(np.float64), values(want_y), **tolerance(dtype))
    got = grads(name, at, cos(y.shape, dtype), *xs)
    assert len(got) == len(want_grads) == len(xs)
    for x, g, want in zip(xs, got, want_grads):
        assert (g.shape, g.dtype) == (x.shape, x.dtype)
        np.testing.assert_allclose(g.ravel().astype(np.float64), values(want), **tolerance(dtype))


def test_shapes_are_mxnets():
    """Output shapes MXNet 1.9.1 gave (the values of some are in MX above)."""
    x, w = lin((2, 4, 5, 6, 7)), sin((6, 4, 3, 3, 3))
    conv = {"kernel": [3, 3, 3], "num_filter": 6, "no_bias": True}
    assert run("Convolution", conv, x, w).shape == (2, 6, 3, 4, 5)
    assert run("Convolution", {**conv, "dilate": [2, 1, 1]}, x, w).shape == (2, 6, 1, 4, 5)
    assert run("Convolution", {**conv, "pad": [1, 0, 2], "stride": [2, 1, 3]}, x, w).shape == (2, 6, 3, 4, 3)
    assert run("Convolution", {**conv, "layout": "NCDHW"}, x, w).shape == (2, 6, 3, 4, 5)
    x, w = lin((2, 4, 3, 4, 5)), sin((4, 3, 2, 3, 2))
    deconv = {"kernel": [2, 3, 2], "num_filter": 3}
    assert run("Deconvolution", deconv, x, w).shape == (2, 3, 4, 6, 6)
    geometry = {"stride": [2, 2, 3], "adj": [1, 0, 2], "pad": [1, 1, 0]}
    assert run("Deconvolution", {**deconv, **geometry}, x, w).shape == (2, 3, 5, 7, 16)
    assert run("Deconvolution", {**deconv, "dilate": [1, 1, 1]}, x, w).shape == (2, 3, 4, 6, 6)
    assert run("Deconvolution", {**deconv, "num_filter": 6, "num_group": 2}, x, w).shape == (2, 6, 4, 6, 6)
    target = {"stride": [2, 2, 2], "target_shape": [6, 9, 10]}  # (the largest output: MXNet takes it)
    assert run("Deconvolution", {**deconv, **target}, x, w).shape == (2, 3, 6, 9, 10)
    x = lin((2, 3, 5, 6, 7))
    for kind in ("max", "avg", "sum"):
        assert run("Pooling", {"kernel": [2, 3, 2], "pool_type": kind}, x).shape == (2, 3, 4, 4, 6)
        assert run("Pooling", {"global_pool": True, "pool_type": kind}, x).shape == (2, 3, 1, 1, 1)
    # a pad as wide as the kernel: sum pooling, and float64 max pooling, take it
    assert run("Pooling", {"kernel": [2, 2, 2], "pad": [2, 0, 0], "pool_type": "sum"}, x).shape == (2, 3, 8, 5, 6)
    y = run("Pooling", {"kernel": [2, 2, 2], "pad": [2, 0, 0]}, PX.astype("float64"))
    assert y.shape == (1, 1, 6, 3, 3)
    assert (y[0, 0, :1] == np.finfo(np.float64).min).all()  # windows all padding: MXNet's -1.79769313e+308


def test_inputs_mxnets_cpu_build_refuses_are_computed():
    """MXNet 1.9.1's CPU build fails on a float16 Convolution ("FP16 gemm on cpu not
    implemented!"), a float16 or float64 3-D Deconvolution ("Only 1D or 2D Deconvolution is
    natively supported"), and a 3-D ``target_shape`` below the largest output ("could not create
    a descriptor for a dilated deconvolution forward propagation primitive"): they are
    computed, the same values as float32's and as the pad and adj that give the target."""
    at = MX_CASE["C1"][1]
    xs = [x.astype("float16") for x in MX_CASE["C1"][0]("float32")]
    y = run("Convolution", at, *xs)
    np.testing.assert_allclose(y.ravel().astype(np.float64), values(MX["C1"][0]), rtol=1e-2, atol=1e-2)
    at = MX_CASE["D1"][1]
    for dtype, close in (("float16", 1e-2), ("float64", 1e-6)):
        xs = MX_CASE["D1"][0](dtype)
        y = run("Deconvolution", at, *xs)
        assert y.dtype == np.dtype(dtype)
        np.testing.assert_allclose(y.ravel().astype(np.float64), values(MX["D1"][0]), rtol=close, atol=close)
    x, w = lin((2, 4, 3, 4, 5)), sin((4, 3, 2, 3, 2))
    at = {"kernel": [2, 3, 2], "num_filter": 3, "stride": [2, 2, 2]}
    y = run("Deconvolution", {**at, "target_shape": [5, 8, 9]}, x, w)  # the largest: (6, 9, 10)
    assert y.shape == (2, 3, 5, 8, 9)
    np.testing.assert_array_equal(y, run("Deconvolution", {**at, "pad": [1, 1, 1], "adj": [1, 1, 1]}, x, w))


def test_3d_im2col_and_col2im_are_computed():
    """MXNet 1.9.1's im2col and col2im fail on 3-D data ("new and old shape do not match total
    elements"); here the columns are (N, C*kd*kh*kw, OD*OH*OW), in the order of the 2-D ones
    (channel, then the taps depth by depth; the windows likewise), and col2im is im2col's
    transpose: <im2col(x), c> = <x, col2im(c)>."""
    at = {"kernel": [2, 2, 2], "stride": [1, 2, 1], "pad": [0, 1, 1], "dilate": [1, 1, 2]}
    x = lin((2, 3, 3, 4, 3), "float64")
    cols = run("im2col", at, x)
    assert cols.shape == (2, 24, 18)  # 3 channels x 8 taps; windows (2, 3, 3)
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    # channel 1, tap (1, 0, 1), window (1, 2, 0): data (1 + 1, 2 * 2 + 0, 0 + 2 * 1) of the padded data
    assert cols[1, 8 + 4 + 1, 9 + 6 + 0] == padded[1, 1, 2, 4, 2]
    c = cos(cols.shape, "float64")
    back = run("col2im", {**at, "output_size": [3, 4, 3]}, c)
    assert back.shape == x.shape
    np.testing.assert_allclose((cols * c).sum(), (x * back).sum(), rtol=1e-12)


def test_3d_convolution_through_the_client_to_second_order():
    """Recorded through nd and autograd: the gradients are MXNet's, and the gradient of a
    function of the data's gradient flows back to the filters (the VJP is made of table ops,
    3-D im2col and col2im among them)."""
    make, at = MX_CASE["C1"]
    xv, wv, bv = make("float32")
    x, w, b = nd.array(xv), nd.array(wv), nd.array(bv)
    for v in (x, w, b):
        v.attach_grad()
    g = nd.array(cos((1, 3, 4, 1, 4)))
    with autograd.record():
        y = nd.Convolution(x, w, b, **at)
    y.backward(g)
    np.testing.assert_allclose(y.asnumpy().ravel(), values(MX["C1"][0]), rtol=1e-5, atol=1e-6)
    for v, want in zip((x, w, b), MX["C1"][1]):
        np.testing.assert_allclose(v.grad.asnumpy().ravel(), values(want), rtol=1e-5, atol=1e-6)
    with autograd.record():
        y = nd.Convolution(x, w, b, **at)
        (dx,) = autograd.grad(nd.sum(y * g), [x], create_graph=True)
        z = nd.sum(dx * dx)
    z.backward()
    # against central differences of |dx|^2 in the filters (float64, with the op's own VJP)
    xs64 = [v.astype(np.float64) for v in (xv, wv, bv)]

    def norm2(filters: np.ndarray) -> float:
        dx = grads("Convolution", at, cos((1, 3, 4, 1, 4), "float64"), xs64[0], filters, xs64[2])[0]
        return float((dx * dx).sum())

    got = w.grad.asnumpy().ravel()
    for i in (0, 7, 30, 47):
        step = np.zeros(48)
        step[i] = 1e-5
        up, down = xs64[1] + step.reshape(wv.shape), xs64[1] - step.reshape(wv.shape)
        assert got[i] == pytest.approx((norm2(up) - norm2(down)) / 2e-5, rel=1e-4, abs=1e-4)


def test_an_empty_batch_goes_through_3d_windows():
    for op, x, w, want in [
        (nd.Convolution, (0, 4, 3, 4, 4), (2, 2, 2, 2, 2), (0, 2, 2, 3, 3)),
        (nd.Deconvolution, (0, 4, 2, 2, 2), (4, 1, 2, 2, 2), (0, 2, 3, 3, 3)),
    ]:
        xs, ws = nd.zeros(x), nd.ones(w)
        xs.attach_grad()
        ws.attach_grad()
        with autograd.record():
            y = op(xs, ws, kernel=w[2:], num_filter=2, num_group=2, no_bias=True)
        y.backward()
        assert y.asnumpy().shape == want
        assert xs.grad.asnumpy().shape == x and not ws.grad.asnumpy().any()
    y = nd.Pooling(nd.zeros((0, 2, 3, 4, 5)), kernel=(2, 2, 2), pool_type="avg")
    assert y.asnumpy().shape == (0, 2, 2, 3, 4)


# --------------------------------------------------------------------------
# refused: MXNet 1.9.1's message on each line above the case

X = ((2, 4, 5, 6, 7), "float32")
W = ((6, 4, 3, 3, 3), "float32")
CONV = {"kernel": [3, 3, 3], "num_filter": 6, "no_bias": True}
XD = ((2, 4, 3, 4, 5), "float32")
WD = ((4, 3, 2, 3, 2), "float32")
DECONV = {"kernel": [2, 3, 2], "num_filter": 3}
XP = ((2, 3, 5, 6, 7), "float32")

REFUSED = [  # op, attributes, inputs, error, words of its message
    # "Input data should be 4D in batch-num_filter-y-x" (a 2-D kernel)
    ("Convolution", {**CONV, "kernel": [3, 3]}, (X, W), InvalidInput, "kernel must have 3 values for 3-D data"),
    # "Stride must have the same number of dimensions with kernel_size"
    ("Convolution", {**CONV, "stride": [2, 1]}, (X, W), InvalidInput, "stride must have 3 values for 3-D data"),
    # "Dilate must have the same number of dimensions with kernel_size"
    ("Convolution", {**CONV, "dilate": [2, 1]}, (X, W), InvalidInput, "dilate must have 3 values for 3-D data"),
    ("Convolution", {**CONV, "pad": [1, 1]}, (X, W), InvalidInput, "pad must have 3 values for 3-D data"),
    # "Shape inconsistent, Provided = [6,4,3,3,3], inferred shape=(6,3,3,3,7)" (its NDHWC weight)
    ("Convolution", {**CONV, "layout": "NDHWC"}, (X, W), InvalidInput, "only the NCDHW layout is supported"),
    # "Invalid layout for 5d shape"
    ("Convolution", {**CONV, "layout": "NCHW"}, (X, W), InvalidInput, "only the NCDHW layout is supported"),
    # "Shape inconsistent, Provided = [6,4,3,3], inferred shape=(6,4,3,3,3)"
    (
        "Convolution",
        CONV,
        (X, ((6, 4, 3, 3), "float32")),
        ShapeError,
        "weight shape (6, 4, 3, 3) should be (6, 4, 3, 3, 3)",
    ),
    (
        "Convolution",
        {**CONV, "kernel": [6, 3, 3]},
        (X, ((6, 4, 6, 3, 3), "float32")),
        ShapeError,
        "is larger than the padded input (5, 6, 7)",
    ),
    # "Input data should be 5D in batch-num_filter-depth-y-x"
    ("Convolution", CONV, (((2, 4, 5, 6, 7, 8), "float32"), W), ShapeError, "4-D data (N, C, H, W) or 5-D data"),
    ("Convolution", CONV, (((2, 4, 5, 6), "float32"), W), InvalidInput, "kernel must have 2 values for 2-D data"),
    (
        "Convolution",
        {**CONV, "num_group": 3},
        (X, ((6, 1, 3, 3, 3), "float32")),
        ShapeError,
        "multiple of num_group (3)",
    ),
    ("Convolution", {**CONV, "no_bias": False}, (X, W, ((5,), "float32")), ShapeError, "bias must be of shape (6,)"),
    ("Convolution", CONV, (((2, 4, 5, 6, 7), "int32"), ((6, 4, 3, 3, 3), "int32")), DTypeError, "floating point"),
    ("Convolution", CONV, (((2, 4, 5), "float32"), W), InvalidInput, "kernel must have one value for 1-D data"),
    # "Dilate is not supported in 3d deconvolution"
    (
        "Deconvolution",
        {**DECONV, "dilate": [2, 1, 2]},
        (XD, WD),
        InvalidInput,
        "dilate (2, 1, 2) is not supported for 3-D data",
    ),
    # "Check failed: o_pad[i] >= target_shape[i] (6 vs. 7) : too big target shape"
    (
        "Deconvolution",
        {**DECONV, "stride": [2, 2, 2], "target_shape": [7, 8, 9]},
        (XD, WD),
        ShapeError,
        "target_shape (7, 8, 9) is larger than the largest output (6, 9, 10)",
    ),
    # "adj(d) must be samller than stride[0]"
    (
        "Deconvolution",
        {**DECONV, "stride": [2, 2, 2], "adj": [2, 0, 0]},
        (XD, WD),
        InvalidInput,
        "adj (2, 0, 0) must be smaller than stride (2, 2, 2)",
    ),
    # "Adjustment must have the same number of dimensions with kernel_size"
    (
        "Deconvolution",
        {**DECONV, "stride": [2, 2, 2], "adj": [1, 0]},
        (XD, WD),
        InvalidInput,
        "adj must have 3 values for 3-D data",
    ),
    # "shape dim size must be >= -1, while received -2"
    ("Deconvolution", {**DECONV, "pad": [3, 0, 0]}, (XD, WD), ShapeError, "leaves an empty output (-2, 6, 6)"),
    ("Deconvolution", {**DECONV, "layout": "NDHWC"}, (XD, WD), InvalidInput, "only the NCDHW layout is supported"),
    # "Input data should be 4D in batch-num_filter-y-x"
    ("Deconvolution", {**DECONV, "kernel": [2, 3]}, (XD, WD), InvalidInput, "kernel must have 3 values for 3-D data"),
    (
        "Deconvolution",
        DECONV,
        (XD, ((4, 3, 2, 3), "float32")),
        ShapeError,
        "weight shape (4, 3, 2, 3) should be (4, 3, 2, 3, 2)",
    ),
    # (NDHWC is for rank 5: the rank-4 layout NHWC is not)
    ("Pooling", {"kernel": [2, 2, 2], "layout": "NHWC"}, (XP,), ShapeError, "layout NHWC is for data of rank 4"),
    # "Need 3D layout"
    ("Pooling", {"kernel": [2, 2, 2], "layout": "NCHW"}, (XP,), InvalidInput, "only the NCDHW layout is supported"),
    # "Currently 'same' supports Max Pooling 1-D" (gradserve has no 'same', in 1-D either)
    ("Pooling", {"kernel": [2, 2, 2], "pooling_convention": "same"}, (XP,), InvalidInput, "'same' is not supported"),
    # "Check failed: param.p_value.has_value()"
    ("Pooling", {"kernel": [2, 2, 2], "pool_type": "lp"}, (XP,), InvalidInput, "lp pooling needs p_value 1, 2 or 3"),
    # "Check failed: pad_l[0] < kernel[0] (2 vs. 2)"
    ("Pooling", {"kernel": [2, 2, 2], "pad": [2, 0, 0]}, (XP,), InvalidInput, "pad_l[0] < kernel[0], 2 vs. 2"),
    (
        "Pooling",
        {"kernel": [2, 2, 2], "pad": [0, 0, 2], "pool_type": "avg"},
        (XP,),
        InvalidInput,
        "pad_l[2] < kernel[2], 2 vs. 2",
    ),
    # "kernel size exceeds input"
    ("Pooling", {"kernel": [6, 2, 2]}, (XP,), ShapeError, "kernel (6, 2, 2) is larger than the padded input (5, 6, 7)"),
    # "Input data should be 4D in (batch, channel, y, x)"
    ("Pooling", {"kernel": [2, 2]}, (XP,), InvalidInput, "kernel must have 3 values for 3-D data"),
    # "index = 1 must be in range [0, 1)"
    ("Pooling", {"kernel": [2, 2, 2], "stride": [2, 2]}, (XP,), InvalidInput, "stride must have 3 values for 3-D data"),
    # "0D pooling not supported"
    ("Pooling", {}, (XP,), InvalidInput, "kernel is required unless global_pool is true"),
    # "Unexpected input data dim 6"
    (
        "Pooling",
        {"kernel": [2, 2, 2, 2]},
        (((1, 1, 2, 2, 2, 2), "float32"),),
        ShapeError,
        "4-D data (N, C, H, W) or 5-D data",
    ),
    (
        "col2im",
        {"kernel": [2, 2, 2], "output_size": [3, 4, 3]},
        (((1, 16, 17), "float32"),),
        ShapeError,
        "17 columns; an image of (3, 4, 3) has 12 windows (2, 3, 2)",
    ),
    (
        "col2im",
        {"kernel": [2, 2], "output_size": [3, 4, 3]},
        (((1, 16, 18), "float32"),),
        InvalidInput,
        "kernel must have 3 values for 3-D data",
    ),
    (
        "col2im",
        {"kernel": [2, 2, 2], "output_size": [3, 4, 3, 3]},
        (((1, 16, 18), "float32"),),
        InvalidInput,
        "output_size must be 1, 2 or 3 positive values",
    ),
]


@pytest.mark.parametrize("name, at, specs, kind, words", REFUSED, ids=[f"{r[0]}-{i}" for i, r in enumerate(REFUSED)])
def test_refused(name, at, specs, kind, words):
    e = refused(name, at, *specs)
    assert isinstance(e, kind) and words in str(e) and str(e).startswith(f"{name}: "), e


def test_one_value_is_every_axis():
    """One value of kernel, stride, dilate or pad is used for each of the three axes (MXNet's
    wants three: "Stride must have the same number of dimensions with kernel_size"), as the
    2-D ops here take one for both of theirs."""
    x, w = lin((1, 2, 5, 6, 7)), sin((2, 2, 3, 3, 3))
    one = {"kernel": [3], "stride": [2], "pad": [1], "num_filter": 2, "no_bias": True}
    three = {"kernel": [3, 3, 3], "stride": [2, 2, 2], "pad": [1, 1, 1], "num_filter": 2, "no_bias": True}
    np.testing.assert_array_equal(run("Convolution", one, x, w), run("Convolution", three, x, w))
    np.testing.assert_array_equal(
        run("Pooling", {"kernel": [2], "pool_type": "avg"}, x),
        run("Pooling", {"kernel": [2, 2, 2], "pool_type": "avg"}, x),
    )


def test_window_plans_stay_small_for_big_kernels():
    """A global pooling's gradient sums its one window back in one move, and a plan of more
    moves than CACHED_MOVES is not kept: the cache of window plans stays within a few MB
    whatever the shapes a server sees (a 512 x 512 global pooling kept 62 MB a shape)."""
    from gradserve.engine import ops_nn

    at = {"kernel": (40, 40), "stride": (1, 1), "pad": (0, 0), "dilate": ()}
    _, moves, _ = ops_nn._giving("col2im", at["kernel"], at["stride"], at["pad"], (), (1, 1, 40, 40))
    assert len(moves) == 1  # (one window: its taps in one move)
    before = ops_nn._giving.cache_info().currsize
    for w in range(100, 103):  # (kernels of 100 x w taps over as many windows: 5,000 moves and more)
        x = nd.array(np.ones((1, 1, 199, w + 99), np.float32))
        x.attach_grad()
        with autograd.record():
            y = nd.Pooling(x, kernel=(100, w), pool_type="avg")
        y.backward()
        np.testing.assert_allclose(x.grad.asnumpy().sum(), 100 * 100, rtol=1e-4)  # (each window gives 1)
    assert ops_nn._giving.cache_info().currsize == before


def test_pooling_takes_channels_last_data_as_mxnet(mode):
    """NDHWC (and NHWC, NWC) data pools as its channels-first transpose does, gradients too
    (MXNet's Pooling takes them; values checked with MXNet 1.9.1)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 4, 5, 3)).astype(np.float32)
    last, first = nd.array(x), nd.array(x.transpose(0, 4, 1, 2, 3))
    for a in (last, first):
        a.attach_grad()
    g = rng.standard_normal((2, 2, 2, 2, 3)).astype(np.float32)
    with autograd.record():
        y = nd.Pooling(last, kernel=(2, 2, 2), stride=(2, 2, 2), pool_type="avg", layout="NDHWC")
        z = nd.Pooling(first, kernel=(2, 2, 2), stride=(2, 2, 2), pool_type="avg")
    y.backward(nd.array(g))
    z.backward(nd.array(g.transpose(0, 4, 1, 2, 3)))
    np.testing.assert_allclose(y.asnumpy(), z.asnumpy().transpose(0, 2, 3, 4, 1), rtol=1e-6)
    np.testing.assert_allclose(last.grad.asnumpy(), first.grad.asnumpy().transpose(0, 2, 3, 4, 1), rtol=1e-6)
