# IPython kernel configuration installed into .venv/etc/ipython by the
# Makefile, so it applies to the kernels that build the book and to `make lab`.
#
# TensorFlow's C++ runtime logs to file descriptor 2 before Python can
# configure any logging (absl: "All log messages before absl::InitializeLog()
# ..."). With fd capture on, those lines land in the cell's stderr and the
# strict build treats them as warnings. With it off they go to the console;
# Python-level warnings and errors are still captured in the cell.
c = get_config()  # noqa: F821
c.IPKernelApp.capture_fd_output = False
