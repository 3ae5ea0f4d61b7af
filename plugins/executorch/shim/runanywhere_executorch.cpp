// The C shim between the RunAnywhere ExecuTorch plugin (Rust) and ExecuTorch's C++
// runtime (the shared libraries of the `executorch` PyPI wheel).
//
// Why a shim: ExecuTorch's API is C++ (Module, EValue, TensorPtr); Rust talks C. This
// file is the whole C++ side and stays small on purpose: open a program, describe its
// methods, call a metadata method, run `forward`. Every decision (which methods an LLM
// export has, how to read the metadata, prefill chunking, the generation loop) is made
// in Rust.
//
// Rules every entry point follows:
//   * no C++ exception ever leaves it: each body runs inside `guard`, which turns an
//     exception into an error string;
//   * errors are returned as a nonzero code plus a malloc'd message in `*err` (freed
//     with `ra_et_free_string`);
//   * inputs are checked here before ExecuTorch sees them, because ExecuTorch reports
//     some misuse with ET_CHECK, which aborts the process.
//
// The plugin loads this library at run time (dlopen, RTLD_LOCAL), so ExecuTorch's
// libraries, and the XNNPACK / pthreadpool / cpuinfo symbols they export, stay local
// to it. scripts/fetch-executorch.sh builds it next to the wheel's libraries.

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/platform.h>
#include <executorch/runtime/platform/runtime.h>

// libexecutorch_threadpool.so exports these, but the wheel ships no header for them.
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  size_t get_thread_count() const;
  bool _unsafe_reset_threadpool(uint32_t num_threads);
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

using executorch::aten::ScalarType;
using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::Tag;

// Only the ra_et_* entry points are exported (the library is built with
// -fvisibility=hidden): nothing of ExecuTorch's headers leaks into the symbol table.
#define RA_EXPORT __attribute__((visibility("default")))

extern "C" {

/// Receives ExecuTorch's log lines: level is 'D', 'I', 'E' or 'F'.
typedef void (*ra_et_log_fn)(char level, const char* file, size_t line,
                             const char* message, size_t length);

struct ra_et_model {
  std::unique_ptr<Module> module;
};

}  // extern "C"

namespace {

ra_et_log_fn g_log = nullptr;

void emit_log(et_timestamp_t, et_pal_log_level_t level, const char* filename,
              const char*, size_t line, const char* message, size_t length) {
  ra_et_log_fn log = g_log;
  if (log != nullptr) {
    log(static_cast<char>(level), filename != nullptr ? filename : "", line,
        message != nullptr ? message : "", message != nullptr ? length : 0);
  }
}

char* dup(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.data(), s.size());
    out[s.size()] = '\0';
  }
  return out;
}

int fail(char** err, const std::string& message) {
  if (err != nullptr) {
    *err = dup(message);
  }
  return 1;
}

std::string describe(Error e) {
  std::ostringstream s;
  s << executorch::runtime::to_string(e) << " (ExecuTorch error 0x" << std::hex
    << static_cast<uint32_t>(e) << ")";
  return s.str();
}

// Runs `body`, turning any exception into an error.
template <typename F>
int guard(char** err, F body) {
  try {
    return body();
  } catch (const std::exception& e) {
    return fail(err, std::string("ExecuTorch threw: ") + e.what());
  } catch (...) {
    return fail(err, "ExecuTorch threw an unknown exception");
  }
}

const char* tag_name(Tag tag) {
  switch (tag) {
    case Tag::None: return "None";
    case Tag::Tensor: return "Tensor";
    case Tag::String: return "String";
    case Tag::Double: return "Double";
    case Tag::Int: return "Int";
    case Tag::Bool: return "Bool";
    default: return "Other";
  }
}

void json_string(std::ostringstream& out, const std::string& s) {
  out << '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out << '\\' << c;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out << buf;
    } else {
      out << c;
    }
  }
  out << '"';
}

void json_tensor(std::ostringstream& out,
                 const executorch::runtime::TensorInfo& info) {
  out << ",\"dtype\":" << static_cast<int>(info.scalar_type()) << ",\"sizes\":[";
  auto sizes = info.sizes();
  for (size_t i = 0; i < sizes.size(); ++i) {
    out << (i ? "," : "") << sizes[i];
  }
  out << "]";
}

}  // namespace

extern "C" {

/// Routes ExecuTorch's log lines to `log` (null: dropped) and returns ExecuTorch's
/// version. Call before anything else; calling again replaces the callback.
RA_EXPORT const char* ra_et_init(ra_et_log_fn log) {
  static std::once_flag once;
  g_log = log;
  std::call_once(once, [] {
    executorch::runtime::register_pal(
        executorch::runtime::PalImpl::create(emit_log, __FILE__));
    executorch::runtime::runtime_init();
  });
  return "1.5.1";
}

/// Opens the program at `path` (memory-mapped) with full flatbuffer verification.
RA_EXPORT int ra_et_open(const char* path, ra_et_model** out, char** err) {
  if (path == nullptr || out == nullptr) {
    return fail(err, "ra_et_open: null argument");
  }
  *out = nullptr;
  return guard(err, [&] {
    auto model = std::make_unique<ra_et_model>();
    model->module = std::make_unique<Module>(path, Module::LoadMode::Mmap);
    Error e = model->module->load(
        executorch::runtime::Program::Verification::InternalConsistency);
    if (e != Error::Ok) {
      return fail(err, "cannot load the program: " + describe(e));
    }
    *out = model.release();
    return 0;
  });
}

/// Frees a model from `ra_et_open` (null is fine).
RA_EXPORT void ra_et_free(ra_et_model* model) {
  try {
    delete model;
  } catch (...) {
  }
}

/// Frees a string this library returned (null is fine).
RA_EXPORT void ra_et_free_string(char* s) { std::free(s); }

/// Sets the size of ExecuTorch's process-wide thread pool (XNNPACK and the optimized
/// kernels use it). Returns the size in effect.
RA_EXPORT size_t ra_et_set_threads(uint32_t threads) {
  try {
    auto* pool = executorch::extension::threadpool::get_threadpool();
    if (pool == nullptr) {
      return 0;
    }
    if (threads > 0 && pool->get_thread_count() != threads) {
      pool->_unsafe_reset_threadpool(threads);
    }
    return pool->get_thread_count();
  } catch (...) {
    return 0;
  }
}

/// Describes every method as JSON: [{"name", "inputs": [{"tag", "dtype", "sizes"}],
/// "outputs": [...]}] (dtype and sizes for tensors only; sizes are upper bounds for
/// dynamic shapes). Written to `*json`.
RA_EXPORT int ra_et_describe(ra_et_model* model, char** json, char** err) {
  if (model == nullptr || json == nullptr) {
    return fail(err, "ra_et_describe: null argument");
  }
  *json = nullptr;
  return guard(err, [&] {
    auto names = model->module->method_names();
    if (!names.ok()) {
      return fail(err, "cannot list the methods: " + describe(names.error()));
    }
    std::vector<std::string> sorted(names->begin(), names->end());
    std::sort(sorted.begin(), sorted.end());
    std::ostringstream out;
    out << "[";
    bool first = true;
    for (const auto& name : sorted) {
      auto meta = model->module->method_meta(name);
      if (!meta.ok()) {
        return fail(err, "cannot read method " + name + ": " + describe(meta.error()));
      }
      out << (first ? "" : ",") << "{\"name\":";
      first = false;
      json_string(out, name);
      for (int side = 0; side < 2; ++side) {
        out << (side == 0 ? ",\"inputs\":[" : ",\"outputs\":[");
        size_t n = side == 0 ? meta->num_inputs() : meta->num_outputs();
        for (size_t i = 0; i < n; ++i) {
          auto tag = side == 0 ? meta->input_tag(i) : meta->output_tag(i);
          out << (i ? "," : "") << "{\"tag\":\""
              << (tag.ok() ? tag_name(*tag) : "Unknown") << "\"";
          if (tag.ok() && *tag == Tag::Tensor) {
            auto info = side == 0 ? meta->input_tensor_meta(i)
                                  : meta->output_tensor_meta(i);
            if (info.ok()) {
              json_tensor(out, *info);
            }
          }
          out << "}";
        }
        out << "]";
      }
      out << "}";
    }
    out << "]";
    *json = dup(out.str());
    return *json == nullptr ? fail(err, "out of memory") : 0;
  });
}

/// Loads (prepares) the method `name`, so that a missing operator or backend is
/// reported at model load instead of at the first call.
RA_EXPORT int ra_et_load_method(ra_et_model* model, const char* name, char** err) {
  if (model == nullptr || name == nullptr) {
    return fail(err, "ra_et_load_method: null argument");
  }
  return guard(err, [&] {
    Error e = model->module->load_method(name);
    if (e != Error::Ok) {
      return fail(err, std::string("cannot prepare method ") + name + ": " + describe(e));
    }
    return 0;
  });
}

/// Runs the method `name`, which takes no inputs, and reads its first output as a
/// number: an Int or Bool (into `*int_value`, `*kind` = 1), a Double (`*double_value`,
/// `*kind` = 2), or a one-element integer, boolean or float tensor (likewise).
RA_EXPORT int ra_et_call_scalar(ra_et_model* model, const char* name, int* kind,
                      int64_t* int_value, double* double_value, char** err) {
  if (model == nullptr || name == nullptr || kind == nullptr ||
      int_value == nullptr || double_value == nullptr) {
    return fail(err, "ra_et_call_scalar: null argument");
  }
  return guard(err, [&] {
    auto meta = model->module->method_meta(name);
    if (!meta.ok()) {
      return fail(err, std::string("no method ") + name + ": " + describe(meta.error()));
    }
    if (meta->num_inputs() != 0) {
      return fail(err, std::string("method ") + name + " takes inputs");
    }
    auto result = model->module->execute(name);
    if (!result.ok()) {
      return fail(err, std::string("method ") + name + " failed: " + describe(result.error()));
    }
    if (result->empty()) {
      return fail(err, std::string("method ") + name + " returned nothing");
    }
    const EValue& v = result->at(0);
    if (v.isInt()) {
      *kind = 1;
      *int_value = v.toInt();
    } else if (v.isBool()) {
      *kind = 1;
      *int_value = v.toBool() ? 1 : 0;
    } else if (v.isDouble()) {
      *kind = 2;
      *double_value = v.toDouble();
    } else if (v.isTensor() && v.toTensor().numel() == 1) {
      const auto& t = v.toTensor();
      switch (t.scalar_type()) {
        case ScalarType::Long: *kind = 1; *int_value = t.const_data_ptr<int64_t>()[0]; break;
        case ScalarType::Int: *kind = 1; *int_value = t.const_data_ptr<int32_t>()[0]; break;
        case ScalarType::Bool: *kind = 1; *int_value = t.const_data_ptr<bool>()[0] ? 1 : 0; break;
        case ScalarType::Float: *kind = 2; *double_value = t.const_data_ptr<float>()[0]; break;
        case ScalarType::Double: *kind = 2; *double_value = t.const_data_ptr<double>()[0]; break;
        default:
          return fail(err, std::string("method ") + name + " returned a tensor of an unexpected type");
      }
    } else {
      return fail(err, std::string("method ") + name + " returned a value that is not a number");
    }
    return 0;
  });
}

/// Runs `forward(tokens [1, n], input_pos [1])` with `pos` the position of tokens[0];
/// `wide` selects int64 (1) or int32 (0) inputs, as the method declares them. Writes the
/// logits of the last token (the output's last row) into `logits` (room for `capacity`
/// floats) and their number into `*written`.
RA_EXPORT int ra_et_forward(ra_et_model* model, const int64_t* tokens, size_t n, int64_t pos,
                  int wide, float* logits, size_t capacity, size_t* written,
                  char** err) {
  if (model == nullptr || tokens == nullptr || n == 0 || logits == nullptr ||
      written == nullptr) {
    return fail(err, "ra_et_forward: null or empty argument");
  }
  *written = 0;
  // Sizes are int32 in ExecuTorch's tensors: a larger count would wrap and trip an
  // ET_CHECK (an abort) instead of an error.
  if (n > static_cast<size_t>(INT32_MAX) || pos < 0 ||
      pos > static_cast<int64_t>(INT32_MAX) - static_cast<int64_t>(n)) {
    return fail(err, "ra_et_forward: token count or position out of range");
  }
  if (!wide) {
    for (size_t i = 0; i < n; ++i) {
      if (tokens[i] < INT32_MIN || tokens[i] > INT32_MAX) {
        return fail(err, "ra_et_forward: a token id does not fit the program's int32 input");
      }
    }
  }
  return guard(err, [&] {
    using executorch::extension::from_blob;
    std::vector<int32_t> tokens32;
    int32_t pos32 = static_cast<int32_t>(pos);
    int64_t pos64 = pos;
    executorch::extension::TensorPtr tok_t;
    executorch::extension::TensorPtr pos_t;
    if (wide) {
      tok_t = from_blob(const_cast<int64_t*>(tokens), {1, static_cast<int>(n)},
                        ScalarType::Long);
      pos_t = from_blob(&pos64, {1}, ScalarType::Long);
    } else {
      tokens32.assign(tokens, tokens + n);
      tok_t = from_blob(tokens32.data(), {1, static_cast<int>(n)}, ScalarType::Int);
      pos_t = from_blob(&pos32, {1}, ScalarType::Int);
    }
    auto result = model->module->execute("forward", {EValue(*tok_t), EValue(*pos_t)});
    if (!result.ok()) {
      return fail(err, "forward failed: " + describe(result.error()));
    }
    if (result->empty() || !result->at(0).isTensor()) {
      return fail(err, "forward returned no tensor");
    }
    const auto& out = result->at(0).toTensor();
    if (out.scalar_type() != ScalarType::Float) {
      return fail(err, "forward returned logits that are not float32");
    }
    if (out.dim() < 1) {
      return fail(err, "forward returned a scalar, not logits");
    }
    size_t vocab = static_cast<size_t>(out.size(out.dim() - 1));
    size_t total = static_cast<size_t>(out.numel());
    if (vocab == 0 || total < vocab) {
      return fail(err, "forward returned empty logits");
    }
    if (vocab > capacity) {
      std::ostringstream s;
      s << "forward returned " << vocab << " logits per token; room for " << capacity;
      return fail(err, s.str());
    }
    const float* data = out.const_data_ptr<float>();
    std::memcpy(logits, data + (total - vocab), vocab * sizeof(float));
    *written = vocab;
    return 0;
  });
}

}  // extern "C"
