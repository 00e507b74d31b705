// Lists a TorchScript module's buffers (BatchNorm statistics…), which tch's C API does not:
// it offers named_parameters only. Same shape as tch's atm_named_parameters: each buffer is
// handed to `f` as a new at::Tensor sharing storage with the module's, so copying into it
// restores the module's buffer. Returns 0, or 1 with `error` set (the caller frees nothing:
// the message lives in a static buffer of this thread).

#include <torch/csrc/jit/api/module.h>

#include <cstring>
#include <exception>

extern "C" int helium_named_buffers(void *module, void *data, void (*f)(void *, const char *, void *),
                                    const char **error) {
  static thread_local char message[512];
  try {
    auto *m = static_cast<torch::jit::Module *>(module);
    for (const auto &b : m->named_buffers(/*recurse=*/true)) {
      f(data, b.name.c_str(), new at::Tensor(b.value));
    }
    return 0;
  } catch (const std::exception &e) {
    std::strncpy(message, e.what(), sizeof(message) - 1);
    message[sizeof(message) - 1] = '\0';
  } catch (...) {
    std::strncpy(message, "unknown C++ exception", sizeof(message) - 1);
  }
  *error = message;
  return 1;
}
