"""Child of test_backends.py::test_openvino_cores_freed_out_of_order_leave_sigint_working (a process of its
own, since it may die). Two OpenVINO Cores load the CPU plugin and are freed in the order they were made, as
the runtime probe's candidates and NNCF's calibration engines can be; then ros_fer's `keep_signal_stack`;
then a SIGINT to a Python handler. Prints one JSON line; the process dies by SIGSEGV where the alternate
signal stack was left unmapped."""

import ctypes
import gc
import json
import os
import signal
import sys
import time

import numpy as np
import openvino as ov
import openvino.opset13 as ops


class Stack(ctypes.Structure):  # struct stack_t, read here independently of ros_fer
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def altstack() -> dict:
    """The calling thread's alternate signal stack, and whether /proc/self/maps has memory at its address."""
    stack = Stack()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
    address, mapped = stack.ss_sp or 0, False
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            mapped = mapped or lo <= address < hi
    return {"address": address, "size": stack.ss_size, "disabled": bool(stack.ss_flags & 2), "mapped": mapped}


def compiled(core):
    x = ops.parameter([1, 4], np.float32)
    model = ov.Model([ops.relu(x)], [x])
    net = core.compile_model(model, "CPU")
    net(np.ones((1, 4), np.float32))  # loaded and run
    return net


guard = sys.argv[1] == "guard"
first, second = ov.Core(), ov.Core()
a, b = compiled(first), compiled(second)
del a, first  # the first made goes first: its stack unmapped, the second's "old" stack is that one
gc.collect()
del b, second
gc.collect()
report = {"before": altstack()}
if guard:
    from ros_fer.backends.openvino import keep_signal_stack

    report["set"] = keep_signal_stack()
    report["again"] = keep_signal_stack()  # already ours: nothing to do
report["after"] = altstack()
print(json.dumps(report), flush=True)
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(True))
os.kill(os.getpid(), signal.SIGINT)
deadline = time.monotonic() + 5
while not got and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"handled": bool(got)}), flush=True)
