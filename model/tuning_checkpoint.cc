#include "model/tuning_checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <utility>

#include "kernels/error.h"

#ifndef SEPAL_VERSION
#error "SEPAL_VERSION must be defined by the build"
#endif

namespace sepal {
namespace {

constexpr const char* kFormat = "sepal prompt-tuning checkpoint";
constexpr std::int64_t kFormatVersion = 1;

// An HDF5 identifier closed when it goes out of scope.
class Id {
 public:
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(Id&& other) noexcept : id_(std::exchange(other.id_, -1)), close_(other.close_) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  operator hid_t() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// Errors name the file; HDF5's own error stack printing is off (it would print many lines).
struct Context {
  std::string path;
  template <typename... Args>
  [[noreturn]] void fail(const Args&... args) const {
    sepal::fail(path, ": ", args...);
  }
};

void quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// ---- attributes ----

void set_attribute(const Context& cx, hid_t loc, const char* name, hid_t file_type, hid_t memory_type,
                   const void* value) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id attr(H5Acreate2(loc, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.ok() || H5Awrite(attr, memory_type, value) < 0) cx.fail("cannot write attribute ", name);
}
void set_int(const Context& cx, hid_t loc, const char* name, std::int64_t v) {
  set_attribute(cx, loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}
void set_uint(const Context& cx, hid_t loc, const char* name, std::uint64_t v) {
  set_attribute(cx, loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}
void set_double(const Context& cx, hid_t loc, const char* name, double v) {
  set_attribute(cx, loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}
void set_string(const Context& cx, hid_t loc, const char* name, const std::string& v) {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type, std::max<std::size_t>(1, v.size()));
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  std::string padded = v;
  padded.resize(std::max<std::size_t>(1, v.size()), '\0');
  set_attribute(cx, loc, name, type, type, padded.data());
}

Id open_attribute(const Context& cx, hid_t loc, const std::string& where, const char* name) {
  if (H5Aexists(loc, name) <= 0) cx.fail("attribute ", where, name, " is missing");
  Id attr(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) cx.fail("attribute ", where, name, " is unreadable");
  return attr;
}
template <typename T>
T get_number(const Context& cx, hid_t loc, const std::string& where, const char* name, hid_t memory_type) {
  Id attr = open_attribute(cx, loc, where, name);
  Id type(H5Aget_type(attr), H5Tclose);
  const H5T_class_t cls = H5Tget_class(type);
  const bool wanted_float = H5Tget_class(memory_type) == H5T_FLOAT;
  if (cls != (wanted_float ? H5T_FLOAT : H5T_INTEGER)) {
    cx.fail("attribute ", where, name, " should be ", wanted_float ? "a float" : "an integer");
  }
  T value{};
  if (H5Aread(attr, memory_type, &value) < 0) cx.fail("attribute ", where, name, " is unreadable");
  return value;
}
std::int64_t get_int(const Context& cx, hid_t loc, const std::string& where, const char* name) {
  return get_number<std::int64_t>(cx, loc, where, name, H5T_NATIVE_INT64);
}
std::uint64_t get_uint(const Context& cx, hid_t loc, const std::string& where, const char* name) {
  return get_number<std::uint64_t>(cx, loc, where, name, H5T_NATIVE_UINT64);
}
double get_double(const Context& cx, hid_t loc, const std::string& where, const char* name) {
  return get_number<double>(cx, loc, where, name, H5T_NATIVE_DOUBLE);
}
std::string get_string(const Context& cx, hid_t loc, const std::string& where, const char* name) {
  Id attr = open_attribute(cx, loc, where, name);
  Id type(H5Aget_type(attr), H5Tclose);
  if (H5Tget_class(type) != H5T_STRING || H5Tis_variable_str(type) > 0) {
    cx.fail("attribute ", where, name, " should be a fixed-length string");
  }
  std::string value(H5Tget_size(type), '\0');
  if (H5Aread(attr, type, value.data()) < 0) cx.fail("attribute ", where, name, " is unreadable");
  value.resize(value.find('\0') == std::string::npos ? value.size() : value.find('\0'));
  return value;
}

// ---- datasets ----

void write_dataset(const Context& cx, hid_t loc, const char* name, hid_t file_type, hid_t memory_type,
                   const void* data, const std::vector<hsize_t>& dims) {
  Id space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Id create(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  hsize_t total = 1;
  for (hsize_t d : dims) total *= d;
  if (total > 0) {  // one chunk, so that the Fletcher-32 checksum filter applies
    H5Pset_chunk(create, static_cast<int>(dims.size()), dims.data());
    H5Pset_fletcher32(create);
  }
  Id set(H5Dcreate2(loc, name, file_type, space, H5P_DEFAULT, create, H5P_DEFAULT), H5Dclose);
  if (!set.ok() || (total > 0 && H5Dwrite(set, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)) {
    cx.fail("cannot write dataset ", name);
  }
}

std::string shape_text(const std::vector<hsize_t>& dims) {
  std::ostringstream text;
  for (std::size_t i = 0; i < dims.size(); ++i) text << (i ? "x" : "") << dims[i];
  return text.str();
}

template <typename T>
std::vector<T> read_dataset(const Context& cx, hid_t loc, const std::string& where, const char* name,
                            hid_t memory_type, const std::vector<hsize_t>& dims) {
  if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) cx.fail("dataset ", where, name, " is missing");
  Id set(H5Dopen2(loc, name, H5P_DEFAULT), H5Dclose);
  if (!set.ok()) cx.fail("dataset ", where, name, " is unreadable");
  Id space(H5Dget_space(set), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> found(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank >= 0) H5Sget_simple_extent_dims(space, found.data(), nullptr);
  if (found != dims) {
    cx.fail("dataset ", where, name, " has shape [", shape_text(found), "], expected [", shape_text(dims), "]");
  }
  Id type(H5Dget_type(set), H5Tclose);
  if (H5Tget_class(type) != H5Tget_class(memory_type)) cx.fail("dataset ", where, name, " has the wrong element type");
  hsize_t total = 1;
  for (hsize_t d : dims) total *= d;
  std::vector<T> values(total);
  if (total > 0 && H5Dread(set, memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
    cx.fail("dataset ", where, name, " is damaged (its checksum does not match)");
  }
  return values;
}

Id make_group(const Context& cx, hid_t file, const char* name) {
  Id group(H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!group.ok()) cx.fail("cannot create group ", name);
  return group;
}
Id open_group(const Context& cx, hid_t file, const char* name) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) cx.fail("group ", name, " is missing");
  Id group(H5Gopen2(file, name, H5P_DEFAULT), H5Gclose);
  if (!group.ok()) cx.fail("group ", name, " is unreadable");
  return group;
}

std::string hex64(std::uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
  return text;
}

void sync_path(const std::filesystem::path& path, int flags) {
  const int fd = ::open(path.c_str(), flags);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

}  // namespace

std::string sepal_version() { return SEPAL_VERSION; }

std::string model_fingerprint(const ModelConfig& c, const Checkpoint& checkpoint) {
  std::uint64_t hash = 1469598103934665603ull;
  const auto mix = [&](const std::string& s) {
    for (unsigned char ch : s) {
      hash ^= ch;
      hash *= 1099511628211ull;
    }
    hash ^= 0xff;
    hash *= 1099511628211ull;
  };
  for (std::int64_t v : {c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim,
                         c.vocab_size, c.max_position_embeddings}) {
    mix(std::to_string(v));
  }
  mix(std::to_string(c.rope_theta));
  mix(std::to_string(c.rms_norm_eps));
  for (const auto& [name, tensor] : checkpoint.tensors()) {
    mix(name);
    for (std::int64_t d : tensor.shape) mix(std::to_string(d));
  }
  return hex64(hash);
}

void save_tuning_checkpoint(const std::filesystem::path& path, const TuningCheckpoint& ck) {
  quiet_hdf5();
  const std::filesystem::path tmp = path.string() + ".tmp";
  const Context cx{tmp.string()};
  const TuningSettings& s = ck.settings;
  const TuningState& st = ck.state;
  const PromptParameters& p = st.params;
  {
    Id access(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_libver_bounds(access, H5F_LIBVER_V18, H5F_LIBVER_LATEST);  // checksummed metadata
    Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access), H5Fclose);
    if (!file.ok()) sepal::fail("cannot create the checkpoint ", tmp.string());
    set_string(cx, file, "format", kFormat);
    set_int(cx, file, "format_version", kFormatVersion);
    set_string(cx, file, "sepal_version", sepal_version());
    set_string(cx, file, "model_fingerprint", ck.model_fingerprint);
    set_string(cx, file, "data_fingerprint", ck.data_fingerprint);
    {
      Id g = make_group(cx, file, "settings");
      set_string(cx, g, "method", std::string(tuning_method_name(s.method)));
      set_int(cx, g, "prompt_tokens", s.prompt_tokens);
      set_int(cx, g, "steps", s.steps);
      set_int(cx, g, "batch_size", s.batch_size);
      set_int(cx, g, "micro_batch", s.micro_batch);
      set_double(cx, g, "lr", s.lr);
      set_int(cx, g, "warmup", s.warmup);
      set_uint(cx, g, "seed", s.seed);
      set_double(cx, g, "max_grad_norm", s.max_grad_norm);
      set_double(cx, g, "adam_beta1", s.adamw.beta1);
      set_double(cx, g, "adam_beta2", s.adamw.beta2);
      set_double(cx, g, "adam_eps", s.adamw.eps);
      set_double(cx, g, "weight_decay", s.adamw.weight_decay);
      if (trains_adapters(s.method)) {
        std::string targets;
        for (const Projection t : s.adapter.targets) {
          if (!targets.empty()) targets += ',';
          targets += projection_name(t);
        }
        set_string(cx, g, "adapter_targets", targets);
        set_int(cx, g, "lora_rank", s.adapter.rank);
        set_double(cx, g, "lora_alpha", s.adapter.alpha);
      }
    }
    const auto n = static_cast<hsize_t>(p.tokens), h = static_cast<hsize_t>(p.hidden_size);
    {
      Id g = make_group(cx, file, "params");
      set_int(cx, g, "prompt_offset", p.offset);
      set_int(cx, g, "layers", p.layers);
      set_int(cx, g, "hidden_size", p.hidden_size);
      if (trains_adapters(p.method)) {
        write_dataset(cx, g, "adapter", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, p.adapter.data(),
                      {static_cast<hsize_t>(p.layers), static_cast<hsize_t>(p.adapter.size() / static_cast<std::size_t>(p.layers))});
      } else {
        write_dataset(cx, g, "soft_prompt", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, p.soft.data(), {n, h});
      }
      if (p.method == TuningMethod::kDeepPtune) {
        write_dataset(cx, g, "deep_prompts", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, p.deep.data(),
                      {static_cast<hsize_t>(p.layers), n, h});
      }
    }
    {
      Id g = make_group(cx, file, "optimizer");
      set_int(cx, g, "steps", st.optimizer.steps());
      const auto size = static_cast<hsize_t>(p.size());
      write_dataset(cx, g, "first_moment", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, st.optimizer.first_moment().data(), {size});
      write_dataset(cx, g, "second_moment", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, st.optimizer.second_moment().data(),
                    {size});
    }
    {
      Id g = make_group(cx, file, "progress");
      set_int(cx, g, "step", st.step);
      set_int(cx, g, "epoch", st.epoch);
      set_int(cx, g, "cursor", st.cursor);
      set_string(cx, g, "rng_state", st.rng);
      write_dataset(cx, g, "data_order", H5T_STD_I64LE, H5T_NATIVE_INT64, st.order.data(),
                    {static_cast<hsize_t>(st.order.size())});
    }
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) cx.fail("cannot flush");
  }
  sync_path(tmp, O_RDONLY);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) sepal::fail("cannot move the checkpoint to ", path.string(), ": ", ec.message());
  sync_path(path.parent_path().empty() ? "." : path.parent_path(), O_RDONLY | O_DIRECTORY);
}

TuningCheckpoint load_tuning_checkpoint(const std::filesystem::path& path) {
  quiet_hdf5();
  const Context cx{path.string()};
  if (!std::filesystem::exists(path)) sepal::fail("the checkpoint ", path.string(), " does not exist");
  if (H5Fis_hdf5(path.c_str()) <= 0) cx.fail("not an HDF5 file (or a truncated one)");
  Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) cx.fail("cannot open it as HDF5 (truncated or damaged?)");
  if (H5Aexists(file, "format") <= 0 || get_string(cx, file, "/", "format") != kFormat) {
    cx.fail("not a sepal prompt-tuning checkpoint");
  }
  if (const std::int64_t v = get_int(cx, file, "/", "format_version"); v != kFormatVersion) {
    cx.fail("checkpoint format version ", v, "; this sepal reads version ", kFormatVersion);
  }
  TuningCheckpoint ck;
  ck.sepal_version = get_string(cx, file, "/", "sepal_version");
  ck.model_fingerprint = get_string(cx, file, "/", "model_fingerprint");
  ck.data_fingerprint = get_string(cx, file, "/", "data_fingerprint");
  TuningSettings& s = ck.settings;
  {
    Id g = open_group(cx, file, "settings");
    const std::string where = "settings/";
    const std::string method = get_string(cx, g, where, "method");
    const auto parsed = parse_tuning_method(method);
    if (!parsed) cx.fail("unknown tuning method \"", method, "\"");
    s.method = *parsed;
    s.prompt_tokens = get_int(cx, g, where, "prompt_tokens");
    s.steps = get_int(cx, g, where, "steps");
    s.batch_size = get_int(cx, g, where, "batch_size");
    s.micro_batch = get_int(cx, g, where, "micro_batch");
    s.lr = get_double(cx, g, where, "lr");
    s.warmup = get_int(cx, g, where, "warmup");
    s.seed = get_uint(cx, g, where, "seed");
    s.max_grad_norm = get_double(cx, g, where, "max_grad_norm");
    s.adamw.beta1 = get_double(cx, g, where, "adam_beta1");
    s.adamw.beta2 = get_double(cx, g, where, "adam_beta2");
    s.adamw.eps = get_double(cx, g, where, "adam_eps");
    s.adamw.weight_decay = get_double(cx, g, where, "weight_decay");
    if (trains_adapters(s.method)) {
      s.adapter.method = s.method == TuningMethod::kPeqa ? AdapterMethod::kPeqa : AdapterMethod::kLora;
      s.adapter.rank = get_int(cx, g, where, "lora_rank");
      s.adapter.alpha = get_double(cx, g, where, "lora_alpha");
      const std::string targets = get_string(cx, g, where, "adapter_targets");
      std::size_t at = 0;
      while (at <= targets.size()) {
        const std::size_t comma = std::min(targets.find(',', at), targets.size());
        const auto p = parse_projection(std::string_view(targets).substr(at, comma - at));
        if (!p) cx.fail("settings/adapter_targets names an unknown projection: \"", targets, "\"");
        s.adapter.targets.push_back(*p);
        at = comma + 1;
      }
    }
  }
  try {
    validate(s);
  } catch (const Error& e) {
    cx.fail("invalid settings: ", e.what());
  }
  TuningState& st = ck.state;
  PromptParameters& p = st.params;
  {
    Id g = open_group(cx, file, "params");
    p.method = s.method;
    p.tokens = s.prompt_tokens;
    p.offset = get_int(cx, g, "params/", "prompt_offset");
    p.layers = get_int(cx, g, "params/", "layers");
    if (trains_adapters(p.method)) {
      p.hidden_size = get_int(cx, g, "params/", "hidden_size");
      if (p.layers < 1 || p.layers > 100000 || p.hidden_size < 1) cx.fail("params: ", p.layers, " layers of ", p.hidden_size);
      p.adapter_shape = s.adapter;
      if (H5Lexists(g, "adapter", H5P_DEFAULT) <= 0) cx.fail("dataset params/adapter is missing");
      Id set(H5Dopen2(g, "adapter", H5P_DEFAULT), H5Dclose);
      Id space(H5Dget_space(set), H5Sclose);
      hsize_t dims[2] = {0, 0};
      if (H5Sget_simple_extent_ndims(space) != 2) cx.fail("dataset params/adapter should have 2 dimensions");
      H5Sget_simple_extent_dims(space, dims, nullptr);
      if (dims[0] != static_cast<hsize_t>(p.layers)) cx.fail("dataset params/adapter has ", dims[0], " blocks, not ", p.layers);
      p.adapter = read_dataset<float>(cx, g, "params/", "adapter", H5T_NATIVE_FLOAT, {dims[0], dims[1]});
    } else {
    if (p.layers < 1 || p.tokens < 1) cx.fail("params: ", p.layers, " layers and ", p.tokens, " prompt tokens");
    if (H5Lexists(g, "soft_prompt", H5P_DEFAULT) <= 0) cx.fail("dataset params/soft_prompt is missing");
    Id set(H5Dopen2(g, "soft_prompt", H5P_DEFAULT), H5Dclose);
    Id space(H5Dget_space(set), H5Sclose);
    hsize_t dims[2] = {0, 0};
    if (H5Sget_simple_extent_ndims(space) != 2) cx.fail("dataset params/soft_prompt should have 2 dimensions");
    H5Sget_simple_extent_dims(space, dims, nullptr);
    p.hidden_size = static_cast<std::int64_t>(dims[1]);
    p.soft = read_dataset<float>(cx, g, "params/", "soft_prompt", H5T_NATIVE_FLOAT,
                                 {static_cast<hsize_t>(p.tokens), dims[1]});
    }
    if (p.method == TuningMethod::kDeepPtune) {
      if (H5Lexists(g, "deep_prompts", H5P_DEFAULT) <= 0) cx.fail("dataset params/deep_prompts is missing");
      p.deep = read_dataset<float>(cx, g, "params/", "deep_prompts", H5T_NATIVE_FLOAT,
                                   {static_cast<hsize_t>(p.layers), static_cast<hsize_t>(p.tokens),
                                    static_cast<hsize_t>(p.hidden_size)});
    }
  }
  {
    Id g = open_group(cx, file, "optimizer");
    const auto size = static_cast<hsize_t>(p.size());
    auto m = read_dataset<float>(cx, g, "optimizer/", "first_moment", H5T_NATIVE_FLOAT, {size});
    auto v = read_dataset<float>(cx, g, "optimizer/", "second_moment", H5T_NATIVE_FLOAT, {size});
    st.optimizer = AdamW(p.size(), s.adamw);
    st.optimizer.restore(std::move(m), std::move(v), get_int(cx, g, "optimizer/", "steps"));
  }
  {
    Id g = open_group(cx, file, "progress");
    st.step = get_int(cx, g, "progress/", "step");
    st.epoch = get_int(cx, g, "progress/", "epoch");
    st.cursor = get_int(cx, g, "progress/", "cursor");
    st.rng = get_string(cx, g, "progress/", "rng_state");
    if (H5Lexists(g, "data_order", H5P_DEFAULT) <= 0) cx.fail("dataset progress/data_order is missing");
    Id set(H5Dopen2(g, "data_order", H5P_DEFAULT), H5Dclose);
    Id space(H5Dget_space(set), H5Sclose);
    hsize_t count = 0;
    if (H5Sget_simple_extent_ndims(space) != 1) cx.fail("dataset progress/data_order should have 1 dimension");
    H5Sget_simple_extent_dims(space, &count, nullptr);
    st.order = read_dataset<std::int64_t>(cx, g, "progress/", "data_order", H5T_NATIVE_INT64, {count});
  }
  return ck;
}

}  // namespace sepal
