// One small file API over two backends, so the same expectations run against the fleet and
// against a real tmpfs directory. Every call returns what the system call would, -errno on error.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "sockets/fs/fs_client.hpp"

namespace flotilla::fs::testing {

class FsApi {
 public:
  virtual ~FsApi() = default;
  virtual int open(const std::string& path, int flags, unsigned mode = 0644) = 0;
  virtual long write(int fd, const std::string& data) = 0;
  virtual long read(int fd, std::string& out, std::size_t length) = 0;
  virtual long pread(int fd, std::string& out, std::size_t length, std::uint64_t offset) = 0;
  virtual long pwrite(int fd, const std::string& data, std::uint64_t offset) = 0;
  virtual long lseek(int fd, long offset, int whence) = 0;
  virtual int close(int fd) = 0;
  virtual int fsync(int fd) = 0;
  virtual int ftruncate(int fd, std::uint64_t size) = 0;
  virtual long fstat_size(int fd) = 0;
  virtual long stat_size(const std::string& path) = 0;
  virtual int stat_type(const std::string& path) = 0;  // S_IFMT bits, or -errno
  virtual int mkdir(const std::string& path, bool distributed = false) = 0;
  virtual int rmdir(const std::string& path) = 0;
  virtual int unlink(const std::string& path) = 0;
  virtual int rename(const std::string& from, const std::string& to) = 0;
  virtual int readdir(const std::string& path, std::vector<std::string>& names) = 0;
  virtual int truncate(const std::string& path, std::uint64_t size) = 0;
  virtual int chmod(const std::string& path, unsigned mode) = 0;
  virtual int mode_of(const std::string& path) = 0;  // permission bits, or -errno
  virtual int utimens(const std::string& path, std::uint64_t atime_ns, std::uint64_t mtime_ns) = 0;
  virtual long long mtime_of(const std::string& path) = 0;  // ns, or -errno
  virtual int symlink(const std::string& target, const std::string& path) = 0;
  virtual int readlink(const std::string& path, std::string& out) = 0;

  // Reads the whole file at `path`; -errno when it cannot be opened.
  int slurp(const std::string& path, std::string& out) {
    const int fd = open(path, O_RDONLY);
    if (fd < 0) return fd;
    out.clear();
    std::string chunk;
    long n = 0;
    while ((n = read(fd, chunk, 5000)) > 0) out += chunk;
    close(fd);
    return n < 0 ? static_cast<int>(n) : 0;
  }
  int spit(const std::string& path, const std::string& data) {
    const int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY);
    if (fd < 0) return fd;
    const long n = write(fd, data);
    const int closed = close(fd);
    if (n < 0) return static_cast<int>(n);
    return closed;
  }
};

class PosixApi final : public FsApi {
 public:
  explicit PosixApi(std::string base) : base_(std::move(base)) {}
  static int err(long rc) { return rc < 0 ? -errno : static_cast<int>(rc); }
  static long lerr(long rc) { return rc < 0 ? -errno : rc; }
  std::string at(const std::string& path) const { return base_ + "/" + path; }

  int open(const std::string& path, int flags, unsigned mode) override {
    return err(::open(at(path).c_str(), flags, mode));
  }
  long write(int fd, const std::string& data) override {
    return lerr(::write(fd, data.data(), data.size()));
  }
  long read(int fd, std::string& out, std::size_t length) override {
    out.assign(length, '\0');
    const long n = lerr(::read(fd, out.data(), length));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return n;
  }
  long pread(int fd, std::string& out, std::size_t length, std::uint64_t offset) override {
    out.assign(length, '\0');
    const long n = lerr(::pread(fd, out.data(), length, static_cast<off_t>(offset)));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return n;
  }
  long pwrite(int fd, const std::string& data, std::uint64_t offset) override {
    return lerr(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset)));
  }
  long lseek(int fd, long offset, int whence) override { return lerr(::lseek(fd, offset, whence)); }
  int close(int fd) override { return err(::close(fd)); }
  int fsync(int fd) override { return err(::fsync(fd)); }
  int ftruncate(int fd, std::uint64_t size) override {
    return err(::ftruncate(fd, static_cast<off_t>(size)));
  }
  long fstat_size(int fd) override {
    struct stat st {};
    if (::fstat(fd, &st) < 0) return -errno;
    return st.st_size;
  }
  long stat_size(const std::string& path) override {
    struct stat st {};
    if (::stat(at(path).c_str(), &st) < 0) return -errno;
    return st.st_size;
  }
  int stat_type(const std::string& path) override {
    struct stat st {};
    if (::lstat(at(path).c_str(), &st) < 0) return -errno;
    return static_cast<int>(st.st_mode & S_IFMT);
  }
  int mkdir(const std::string& path, bool) override { return err(::mkdir(at(path).c_str(), 0755)); }
  int rmdir(const std::string& path) override { return err(::rmdir(at(path).c_str())); }
  int unlink(const std::string& path) override { return err(::unlink(at(path).c_str())); }
  int rename(const std::string& from, const std::string& to) override {
    return err(::rename(at(from).c_str(), at(to).c_str()));
  }
  int readdir(const std::string& path, std::vector<std::string>& names) override {
    DIR* dir = ::opendir(at(path).c_str());
    if (dir == nullptr) return -errno;
    while (dirent* entry = ::readdir(dir)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(dir);
    return 0;
  }
  int truncate(const std::string& path, std::uint64_t size) override {
    return err(::truncate(at(path).c_str(), static_cast<off_t>(size)));
  }
  int chmod(const std::string& path, unsigned mode) override {
    return err(::chmod(at(path).c_str(), mode));
  }
  int mode_of(const std::string& path) override {
    struct stat st {};
    if (::stat(at(path).c_str(), &st) < 0) return -errno;
    return static_cast<int>(st.st_mode & 07777);
  }
  int utimens(const std::string& path, std::uint64_t atime_ns, std::uint64_t mtime_ns) override {
    const timespec times[2] = {
        {static_cast<time_t>(atime_ns / 1'000'000'000), static_cast<long>(atime_ns % 1'000'000'000)},
        {static_cast<time_t>(mtime_ns / 1'000'000'000), static_cast<long>(mtime_ns % 1'000'000'000)}};
    return err(::utimensat(AT_FDCWD, at(path).c_str(), times, 0));
  }
  long long mtime_of(const std::string& path) override {
    struct stat st {};
    if (::stat(at(path).c_str(), &st) < 0) return -errno;
    return static_cast<long long>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  }
  int symlink(const std::string& target, const std::string& path) override {
    return err(::symlink(target.c_str(), at(path).c_str()));
  }
  int readlink(const std::string& path, std::string& out) override {
    char buffer[4096];
    const long n = ::readlink(at(path).c_str(), buffer, sizeof(buffer));
    if (n < 0) return -errno;
    out.assign(buffer, static_cast<std::size_t>(n));
    return 0;
  }

 private:
  std::string base_;
};

class FleetApi final : public FsApi {
 public:
  explicit FleetApi(Client& client) : c_(&client) {}
  static std::string p(const std::string& path) { return "/" + path; }

  int open(const std::string& path, int flags, unsigned mode) override {
    return c_->open(p(path), flags, mode);
  }
  long write(int fd, const std::string& data) override {
    return c_->write(fd, std::as_bytes(std::span(data.data(), data.size())));
  }
  long read(int fd, std::string& out, std::size_t length) override {
    out.assign(length, '\0');
    const long n = c_->read(fd, std::as_writable_bytes(std::span(out.data(), length)));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return n;
  }
  long pread(int fd, std::string& out, std::size_t length, std::uint64_t offset) override {
    out.assign(length, '\0');
    const long n = c_->pread(fd, std::as_writable_bytes(std::span(out.data(), length)), offset);
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return n;
  }
  long pwrite(int fd, const std::string& data, std::uint64_t offset) override {
    return c_->pwrite(fd, std::as_bytes(std::span(data.data(), data.size())), offset);
  }
  long lseek(int fd, long offset, int whence) override { return c_->lseek(fd, offset, whence); }
  int close(int fd) override { return c_->close(fd); }
  int fsync(int fd) override { return c_->fsync(fd); }
  int ftruncate(int fd, std::uint64_t size) override { return c_->ftruncate(fd, size); }
  long fstat_size(int fd) override {
    FileStat st;
    const int rc = c_->fstat(fd, st);
    return rc < 0 ? rc : static_cast<long>(st.size);
  }
  long stat_size(const std::string& path) override {
    FileStat st;
    const int rc = c_->stat(p(path), st);
    return rc < 0 ? rc : static_cast<long>(st.size);
  }
  int stat_type(const std::string& path) override {
    FileStat st;
    const int rc = c_->lstat(p(path), st);
    return rc < 0 ? rc : static_cast<int>(st.mode & S_IFMT);
  }
  int mkdir(const std::string& path, bool distributed) override {
    return c_->mkdir(p(path), 0755, distributed);
  }
  int rmdir(const std::string& path) override { return c_->rmdir(p(path)); }
  int unlink(const std::string& path) override { return c_->unlink(p(path)); }
  int rename(const std::string& from, const std::string& to) override {
    return c_->rename(p(from), p(to));
  }
  int readdir(const std::string& path, std::vector<std::string>& names) override {
    std::vector<DirEntry> entries;
    const int rc = c_->readdir(p(path), entries);
    for (const DirEntry& entry : entries) names.push_back(entry.name);
    return rc;
  }
  int truncate(const std::string& path, std::uint64_t size) override {
    return c_->truncate(p(path), size);
  }
  int chmod(const std::string& path, unsigned mode) override { return c_->chmod(p(path), mode); }
  int mode_of(const std::string& path) override {
    FileStat st;
    const int rc = c_->stat(p(path), st);
    return rc < 0 ? rc : static_cast<int>(st.mode & 07777);
  }
  int utimens(const std::string& path, std::uint64_t atime_ns, std::uint64_t mtime_ns) override {
    return c_->utimens(p(path), atime_ns, mtime_ns);
  }
  long long mtime_of(const std::string& path) override {
    FileStat st;
    const int rc = c_->stat(p(path), st);
    return rc < 0 ? rc : static_cast<long long>(st.mtime_ns);
  }
  int symlink(const std::string& target, const std::string& path) override {
    return c_->symlink(target, p(path));
  }
  int readlink(const std::string& path, std::string& out) override {
    return c_->readlink(p(path), out);
  }

 private:
  Client* c_;
};

}  // namespace flotilla::fs::testing
