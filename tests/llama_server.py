"""`python -m llama_cpp.server`, with the one model parameter complm sets on a CPU with AMX.

llama-cpp-python's server loads models with llama.cpp's defaults, whose AMX
kernels crash a source build on the reference machine
(experts/llama_adapter.model_params says why); the remote-expert tests need
a server that answers.
"""

import runpy

import llama_cpp
import llama_cpp.llama_cpp as raw

from complm_cli.experts.llama_adapter import leave_out_amx

_defaults = raw.llama_model_default_params
raw.llama_model_default_params = llama_cpp.llama_model_default_params = lambda: leave_out_amx(_defaults())
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
