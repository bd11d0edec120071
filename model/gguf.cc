#include "model/gguf.h"

#include <algorithm>
#include <cstring>
#include <fstream>

#include "kernels/error.h"

namespace sepal {
namespace {

constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr std::uint64_t kMaxStringBytes = std::uint64_t{1} << 24;
constexpr std::uint64_t kDefaultAlignment = 32;

enum ValueType : std::uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kString = 8, kArray = 9,
  kU64 = 10, kI64 = 11, kF64 = 12,
};

// Reads the file front to back; every read is bounds-checked.
class Reader {
 public:
  Reader(std::span<const std::byte> bytes, std::string where) : bytes_(bytes), where_(std::move(where)) {}

  template <typename T>
  T pod(const char* what) {
    if (bytes_.size() - at_ < sizeof(T)) fail(where_, ": the file ends inside ", what, " at byte ", at_);
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const auto n = pod<std::uint64_t>(what);
    if (n > kMaxStringBytes || n > bytes_.size() - at_) fail(where_, ": ", what, " of ", n, " bytes does not fit in the file");
    std::string s(reinterpret_cast<const char*>(bytes_.data() + at_), static_cast<std::size_t>(n));
    at_ += static_cast<std::size_t>(n);
    return s;
  }
  // A count of items that take at least `min_bytes` each: more than the rest of the file holds
  // is malformed (and would be a huge allocation).
  std::uint64_t count(const char* what, std::uint64_t min_bytes) {
    const auto n = pod<std::uint64_t>(what);
    if (n > (bytes_.size() - at_) / std::max<std::uint64_t>(min_bytes, 1)) {
      fail(where_, ": ", what, " of ", n, " does not fit in the file");
    }
    return n;
  }
  std::size_t at() const { return at_; }

 private:
  std::span<const std::byte> bytes_;
  std::string where_;
  std::size_t at_ = 0;
};

std::uint64_t scalar_bytes(std::uint32_t type) {
  switch (type) {
    case kU8: case kI8: case kBool: return 1;
    case kU16: case kI16: return 2;
    case kU32: case kI32: case kF32: return 4;
    case kU64: case kI64: case kF64: return 8;
    case kString: return 8;  // at least its length
    default: return 0;
  }
}

GgufValue::Scalar read_scalar(Reader& r, std::uint32_t type, const std::string& key, const std::string& where) {
  switch (type) {
    case kU8: return std::uint64_t{r.pod<std::uint8_t>("a value")};
    case kI8: return std::int64_t{r.pod<std::int8_t>("a value")};
    case kU16: return std::uint64_t{r.pod<std::uint16_t>("a value")};
    case kI16: return std::int64_t{r.pod<std::int16_t>("a value")};
    case kU32: return std::uint64_t{r.pod<std::uint32_t>("a value")};
    case kI32: return std::int64_t{r.pod<std::int32_t>("a value")};
    case kF32: return double{r.pod<float>("a value")};
    case kBool: {
      const auto b = r.pod<std::uint8_t>("a value");
      if (b > 1) fail(where, ": metadata ", key, " holds a bool of ", int{b});
      return b == 1;
    }
    case kString: return r.str("a string");
    case kU64: return r.pod<std::uint64_t>("a value");
    case kI64: return r.pod<std::int64_t>("a value");
    case kF64: return r.pod<double>("a value");
    default: fail(where, ": metadata ", key, " has value type ", type, ", which GGUF does not define");
  }
}

}  // namespace

std::string ggml_type_name(std::uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kBF16: return "BF16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ2_K: return "Q2_K";
    case GgmlType::kQ3_K: return "Q3_K";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kIq4_Nl: return "IQ4_NL";
    case GgmlType::kIq4_Xs: return "IQ4_XS";
    case GgmlType::kMxfp4: return "MXFP4";
  }
  return "type " + std::to_string(type);
}

bool ggml_block_layout(std::uint32_t type, std::int64_t* elements, std::int64_t* bytes) {
  std::int64_t e = 0, b = 0;
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: e = 1; b = 4; break;
    case GgmlType::kF16: case GgmlType::kBF16: e = 1; b = 2; break;
    case GgmlType::kQ4_0: e = 32; b = 18; break;
    case GgmlType::kQ4_1: e = 32; b = 20; break;
    case GgmlType::kQ5_0: e = 32; b = 22; break;
    case GgmlType::kQ5_1: e = 32; b = 24; break;
    case GgmlType::kQ8_0: e = 32; b = 34; break;
    case GgmlType::kQ2_K: e = 256; b = 84; break;
    case GgmlType::kQ3_K: e = 256; b = 110; break;
    case GgmlType::kQ4_K: e = 256; b = 144; break;
    case GgmlType::kQ5_K: e = 256; b = 176; break;
    case GgmlType::kQ6_K: e = 256; b = 210; break;
    case GgmlType::kIq4_Nl: e = 32; b = 18; break;
    case GgmlType::kIq4_Xs: e = 256; b = 136; break;
    case GgmlType::kMxfp4: e = 32; b = 17; break;
    default: return false;
  }
  *elements = e;
  *bytes = b;
  return true;
}

std::int64_t GgufTensor::elements() const {
  std::int64_t n = 1;
  for (const std::int64_t d : dims) n *= d;
  return n;
}

GgufFile GgufFile::parse(std::shared_ptr<const MappedFile> file) {
  GgufFile g;
  g.file_ = std::move(file);
  const std::string where = g.where();
  const std::span<const std::byte> bytes = g.file_->bytes();
  Reader r(bytes, where);
  if (r.pod<std::uint32_t>("the magic") != kMagic) fail(where, ": not a GGUF file (bad magic)");
  g.version_ = r.pod<std::uint32_t>("the version");
  if (g.version_ != 2 && g.version_ != 3) fail(where, ": GGUF version ", g.version_, " is not supported (2 and 3 are)");
  const std::uint64_t tensor_count = r.pod<std::uint64_t>("the tensor count");
  const std::uint64_t kv_count = r.count("the metadata count", 8 + 8 + 4);
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    std::string key = r.str("a metadata key");
    const auto type = r.pod<std::uint32_t>("a value type");
    GgufValue value;
    if (type == kArray) {
      const auto element_type = r.pod<std::uint32_t>("an array's element type");
      if (element_type == kArray || scalar_bytes(element_type) == 0) {
        fail(where, ": metadata ", key, " is an array of value type ", element_type, ", which sepal does not read");
      }
      const std::uint64_t n = r.count("an array's length", scalar_bytes(element_type));
      value.is_array = true;
      value.array.reserve(static_cast<std::size_t>(n));
      for (std::uint64_t k = 0; k < n; ++k) value.array.push_back(read_scalar(r, element_type, key, where));
    } else {
      value.scalar = read_scalar(r, type, key, where);
    }
    if (!g.metadata_.emplace(key, std::move(value)).second) fail(where, ": metadata key ", key, " appears twice");
  }
  std::uint64_t alignment = kDefaultAlignment;
  if (auto a = g.integer("general.alignment")) {
    if (*a < 1 || *a > 65536 || (*a & (*a - 1)) != 0) fail(where, ": general.alignment ", *a, " is not a power of two up to 65536");
    alignment = static_cast<std::uint64_t>(*a);
  }
  struct Pending {
    GgufTensor tensor;
    std::uint64_t offset;
  };
  std::vector<Pending> pending;
  if (tensor_count > (bytes.size() - r.at()) / (8 + 4 + 8 + 4 + 8)) fail(where, ": the tensor count of ", tensor_count, " does not fit in the file");
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    Pending p;
    p.tensor.name = r.str("a tensor name");
    const auto dims = r.pod<std::uint32_t>("a tensor's dimension count");
    if (dims < 1 || dims > 4) fail(where, ": tensor ", p.tensor.name, " has ", dims, " dimensions (1 to 4 are allowed)");
    std::int64_t elements = 1;
    for (std::uint32_t d = 0; d < dims; ++d) {
      const auto n = r.pod<std::uint64_t>("a tensor dimension");
      if (n < 1 || n > (std::uint64_t{1} << 40) || static_cast<std::uint64_t>(elements) > (std::uint64_t{1} << 42) / n) {
        fail(where, ": tensor ", p.tensor.name, " has a dimension of ", n);
      }
      p.tensor.dims.push_back(static_cast<std::int64_t>(n));
      elements *= static_cast<std::int64_t>(n);
    }
    p.tensor.type = r.pod<std::uint32_t>("a tensor type");
    p.offset = r.pod<std::uint64_t>("a tensor offset");
    std::int64_t block_elements = 0, block_bytes = 0;
    if (!ggml_block_layout(p.tensor.type, &block_elements, &block_bytes)) {
      fail(where, ": tensor ", p.tensor.name, " is of ", ggml_type_name(p.tensor.type), ", which sepal does not read");
    }
    if (p.tensor.dims[0] % block_elements != 0) {
      fail(where, ": tensor ", p.tensor.name, " has rows of ", p.tensor.dims[0], " values, not a multiple of ",
           ggml_type_name(p.tensor.type), "'s blocks of ", block_elements);
    }
    p.tensor.bytes = static_cast<std::size_t>(elements / block_elements * block_bytes);
    pending.push_back(std::move(p));
  }
  const std::uint64_t data_start = (r.at() + alignment - 1) / alignment * alignment;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> spans;
  for (Pending& p : pending) {
    if (p.offset % alignment != 0) fail(where, ": tensor ", p.tensor.name, " at offset ", p.offset, " is not aligned to ", alignment);
    if (data_start > bytes.size() || p.offset > bytes.size() - data_start || p.tensor.bytes > bytes.size() - data_start - p.offset) {
      fail(where, ": tensor ", p.tensor.name, "'s ", p.tensor.bytes, " bytes at offset ", p.offset, " lie past the end of the file");
    }
    p.tensor.data = bytes.data() + data_start + p.offset;
    spans.emplace_back(p.offset, p.offset + p.tensor.bytes);
    const std::string name = p.tensor.name;
    if (!g.tensors_.emplace(name, std::move(p.tensor)).second) fail(where, ": tensor ", name, " appears twice");
  }
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second) fail(where, ": two tensors' data overlap at offset ", spans[i].first);
  }
  return g;
}

GgufFile GgufFile::open(const std::filesystem::path& path) { return parse(MappedFile::open(path)); }

std::optional<std::int64_t> GgufFile::integer(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  const GgufValue& v = it->second;
  if (!v.is_array) {
    if (const auto* u = std::get_if<std::uint64_t>(&v.scalar)) {
      if (*u > static_cast<std::uint64_t>(INT64_MAX)) fail(where(), ": metadata ", key, " = ", *u, " is too large");
      return static_cast<std::int64_t>(*u);
    }
    if (const auto* i = std::get_if<std::int64_t>(&v.scalar)) return *i;
  }
  fail(where(), ": metadata ", key, " is not an integer");
}

std::optional<double> GgufFile::number(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  if (!it->second.is_array) {
    if (const auto* d = std::get_if<double>(&it->second.scalar)) return *d;
  }
  if (auto i = integer(key)) return static_cast<double>(*i);
  return std::nullopt;
}

std::optional<std::string> GgufFile::string(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  if (!it->second.is_array) {
    if (const auto* s = std::get_if<std::string>(&it->second.scalar)) return *s;
  }
  fail(where(), ": metadata ", key, " is not a string");
}

std::optional<bool> GgufFile::boolean(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return std::nullopt;
  if (!it->second.is_array) {
    if (const auto* b = std::get_if<bool>(&it->second.scalar)) return *b;
  }
  fail(where(), ": metadata ", key, " is not a bool");
}

const std::vector<GgufValue::Scalar>* GgufFile::array(const std::string& key) const {
  auto it = metadata_.find(key);
  if (it == metadata_.end()) return nullptr;
  if (!it->second.is_array) fail(where(), ": metadata ", key, " is not an array");
  return &it->second.array;
}

bool is_gguf_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  std::uint32_t magic = 0;
  in.read(reinterpret_cast<char*>(&magic), sizeof(magic));
  return in.gcount() == sizeof(magic) && magic == kMagic;
}

}  // namespace sepal
