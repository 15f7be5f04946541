#include "dataplane/shared_region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace flotilla {
namespace {

std::size_t page_round_up(std::size_t size) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  return (size + page - 1) / page * page;
}

Result<std::byte*> map(int fd, std::size_t size, SharedRegion::Access access, SharedRegion::Faults faults) {
  const int prot = access == SharedRegion::Access::read_only ? PROT_READ : PROT_READ | PROT_WRITE;
  // MAP_POPULATE: take the page faults now, not on the data path. Not for the large regions
  // (applications' socket rings, tens of GiB each, sparse): populating them would allocate every ring at
  // start-up and make a restart map hundreds of MiB again; a ring's pages fault in once, on its
  // first use.
  constexpr std::size_t kPopulateAtMost = 64u << 20;
  const int populate = size <= kPopulateAtMost && faults == SharedRegion::Faults::at_map ? MAP_POPULATE : 0;
  void* base = ::mmap(nullptr, size, prot, MAP_SHARED | populate, fd, 0);
  if (base == MAP_FAILED) return Error::from_errno("mmap");
  // A large region is sparse (the TCP socket regions are tens of GiB, nearly all never written): a
  // core dump of a crashing process would read every hole in, allocating it.
  if (size > kPopulateAtMost) (void)::madvise(base, size, MADV_DONTDUMP);
  return static_cast<std::byte*>(base);
}

}  // namespace

void discard_memory(std::span<std::byte> bytes) {
  if (bytes.empty()) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<std::uintptr_t>(bytes.data());
  const std::uintptr_t end = start + bytes.size();
  const std::uintptr_t first_whole = (start + page - 1) / page * page;
  const std::uintptr_t last_whole = end / page * page;
  if (first_whole >= last_whole) {
    std::memset(bytes.data(), 0, bytes.size());
    return;
  }
  std::memset(bytes.data(), 0, first_whole - start);
  std::memset(reinterpret_cast<void*>(last_whole), 0, end - last_whole);
  void* whole = reinterpret_cast<void*>(first_whole);
  if (::madvise(whole, last_whole - first_whole, MADV_REMOVE) != 0) std::memset(whole, 0, last_whole - first_whole);
}

Result<SharedRegion> SharedRegion::create(std::string_view name, std::size_t size, Faults faults) {
  if (size == 0) return Error{Errc::invalid_argument, 0, "region size is zero"};
  const std::string memfd_name(name.substr(0, 200));
  UniqueFd fd(::memfd_create(memfd_name.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) return Error::from_errno("memfd_create");
  size = page_round_up(size);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return Error::from_errno("ftruncate");
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return Error::from_errno("seal region");
  }
  auto base = map(fd.get(), size, Access::read_write, faults);
  if (!base) return base.error();
  return SharedRegion(std::move(fd), base.value(), size, Access::read_write);
}

Result<SharedRegion> SharedRegion::attach(UniqueFd fd, Access access, Faults faults) {
  if (!fd.valid()) return Error{Errc::invalid_argument, 0, "attach region: no descriptor"};
  const int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0) return Error::from_errno("attach region: F_GET_SEALS");
  if ((seals & F_SEAL_SHRINK) == 0) {
    return Error{Errc::bad_layout, 0, "attach region: not sealed against shrinking"};
  }
  struct stat info {};
  if (::fstat(fd.get(), &info) != 0) return Error::from_errno("attach region: fstat");
  if (info.st_size <= 0) return Error{Errc::bad_layout, 0, "attach region: empty"};
  const auto size = static_cast<std::size_t>(info.st_size);
  auto base = map(fd.get(), size, access, faults);
  if (!base) return base.error();
  return SharedRegion(std::move(fd), base.value(), size, access);
}

Result<UniqueFd> SharedRegion::reopen_read_only() const {
  const std::string path = "/proc/self/fd/" + std::to_string(fd_.get());
  UniqueFd read_only(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!read_only.valid()) return Error::from_errno("reopen region read-only");
  return read_only;
}

SharedRegion::SharedRegion(SharedRegion&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      access_(other.access_) {}

SharedRegion& SharedRegion::operator=(SharedRegion&& other) noexcept {
  if (this != &other) {
    unmap();
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    access_ = other.access_;
  }
  return *this;
}

SharedRegion::~SharedRegion() { unmap(); }

void SharedRegion::unmap() {
  if (base_ != nullptr) ::munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

}  // namespace flotilla
