#include "apps/cli/program_image.hpp"

#include <elf.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

namespace flotilla::cli {
namespace {

// Images are read whole up to this size; past it only the headers' first part is looked at.
constexpr std::size_t kReadLimit = 1u << 20;

// `count` bytes at `offset` of `bytes`, or false when they lie past its end.
bool fits(const std::vector<char>& bytes, std::uint64_t offset, std::uint64_t count) {
  return offset <= bytes.size() && count <= bytes.size() - offset;
}

// Whether the notes in [offset, offset + size) hold Go's build ID (owner "Go", type 4): the Go
// linker writes it in every Linux image.
bool has_go_note(const std::vector<char>& bytes, std::uint64_t offset, std::uint64_t size) {
  if (!fits(bytes, offset, size)) return false;
  const auto align4 = [](std::uint64_t value) { return (value + 3) & ~std::uint64_t{3}; };
  std::uint64_t at = offset;
  const std::uint64_t end = offset + size;
  while (at + sizeof(Elf64_Nhdr) <= end) {
    Elf64_Nhdr note{};
    std::memcpy(&note, bytes.data() + at, sizeof(note));
    const std::uint64_t name_at = at + sizeof(note);
    const std::uint64_t next = name_at + align4(note.n_namesz) + align4(note.n_descsz);
    if (next > end || next <= at) return false;
    constexpr std::uint32_t kGoBuildIdNote = 4;
    if (note.n_namesz == 3 && note.n_type == kGoBuildIdNote && std::memcmp(bytes.data() + name_at, "Go", 3) == 0) {
      return true;
    }
    at = next;
  }
  return false;
}

}  // namespace

std::optional<std::filesystem::path> find_command(const std::string& command) {
  if (command.empty()) return std::nullopt;
  if (command.find('/') != std::string::npos) return std::filesystem::path(command);
  const char* path = std::getenv("PATH");
  std::istringstream folders(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  std::string folder;
  while (std::getline(folders, folder, ':')) {
    const std::filesystem::path candidate = std::filesystem::path(folder.empty() ? "." : folder) / command;
    std::error_code error;
    if (std::filesystem::is_regular_file(candidate, error) && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

std::string library_bypass(const std::filesystem::path& image) {
  std::ifstream file(image, std::ios::binary);
  if (!file) return "";
  std::vector<char> bytes(kReadLimit);
  file.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  bytes.resize(static_cast<std::size_t>(file.gcount()));
  if (bytes.size() < EI_NIDENT || std::memcmp(bytes.data(), ELFMAG, SELFMAG) != 0) return "";
  if (bytes[EI_CLASS] == ELFCLASS32) return "is a 32-bit program: it cannot load the 64-bit preload library";
  if (bytes[EI_CLASS] != ELFCLASS64 || !fits(bytes, 0, sizeof(Elf64_Ehdr))) return "";
  Elf64_Ehdr header{};
  std::memcpy(&header, bytes.data(), sizeof(header));
  if (header.e_phentsize != sizeof(Elf64_Phdr) ||
      !fits(bytes, header.e_phoff, std::uint64_t{header.e_phnum} * sizeof(Elf64_Phdr))) {
    return "";
  }
  bool dynamic = false;
  bool go = false;
  for (std::uint16_t i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr segment{};
    std::memcpy(&segment, bytes.data() + header.e_phoff + std::uint64_t{i} * sizeof(Elf64_Phdr), sizeof(segment));
    dynamic = dynamic || segment.p_type == PT_INTERP;
    go = go || (segment.p_type == PT_NOTE && has_go_note(bytes, segment.p_offset, segment.p_filesz));
  }
  if (go) return "is a Go program: its runtime makes socket calls itself, not through the C library";
  if (!dynamic) return "is statically linked: it loads no preload library";
  return "";
}

}  // namespace flotilla::cli
