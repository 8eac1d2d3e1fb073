"""Where compiled loops let other threads run: ``breathe()`` is interpreted Python.

The interpreter hands the GIL to a thread that has asked for it (one that waited the switch
interval, 5 ms by default) at the next function entry or loop turn of Python it runs. Code that
mypyc compiled runs no bytecode, so a long batch, graph walk or backward pass in a server's
thread would keep its event loop from answering anyone until it ends; their loops call
``breathe`` every ``tape.SHARE_EVERY`` turns, which gives a waiting thread the GIL as
interpreted Python would, and costs a function call when none waits. (Letting the GIL go
by hand costs more: ``time.sleep(0)`` is a nanosleep Linux stretches to the timer slack, 60
to 100 us here, and a release that takes the GIL straight back wakes a waiter without its
getting it, which then never asks.)

This module must stay interpreted: it is not in engine/_native.py's COMPILED.
"""


def breathe() -> None:
    """Nothing: entering it is the point."""
