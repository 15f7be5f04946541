#include "components/fs/file_server.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

namespace flotilla::fs {
namespace {

struct Sent {
  ClientId to;
  FsMessage message;
};

class Collect final : public ServerOutputs {
 public:
  void send(ClientId to, const FsMessage& message) override { sent.push_back({to, message}); }
  std::vector<Sent> sent;
};

// A few servers over their own state regions and one block region, talked to directly.
class Fleet {
 public:
  explicit Fleet(std::uint16_t count, std::size_t state_bytes = 256 * 1024,
                 std::size_t blocks = 64, std::size_t max_descriptors = 4096)
      : count_(count), max_descriptors_(max_descriptors), blocks_(blocks * kBlockBytes), states_(count) {
    cache_ = *BlockCache::attach(blocks_, count);
    for (ServerIndex i = 0; i < count; ++i) {
      states_[i].assign(state_bytes / 8, 0);
      servers_.push_back(nullptr);
      EXPECT_TRUE(restart(i));
    }
  }
  bool restart(ServerIndex i) {
    ServerConfig config;
    config.self = i;
    config.servers = count_;
    config.max_descriptors = max_descriptors_;
    config.max_inodes = 40;
    servers_[i].reset();
    auto server = FileServer::start(config, state(i), cache_);
    if (!server) return false;
    servers_[i] = std::move(*server);
    return true;
  }
  std::span<std::byte> state(ServerIndex i) { return std::as_writable_bytes(std::span(states_[i])); }
  FileServer& server(ServerIndex i) { return *servers_[i]; }
  const BlockCache& cache() const { return cache_; }

  // Sends and returns the reply (the last reply to `request.client`), keeping other output.
  FsMessage call(ServerIndex to, FsMessage request) {
    if (request.client == 0) request.client = 1;
    if (request.request == 0) request.request = ++next_request_;
    Collect out;
    servers_[to]->handle(request.client, request, ++now_, out);
    FsMessage reply;
    for (const Sent& sent : out.sent) {
      if (sent.message.op == FsOp::reply && sent.message.request == request.request) {
        reply = sent.message;
      } else {
        other.push_back(sent);
      }
    }
    return reply;
  }

  std::vector<Sent> other;

 private:
  std::uint16_t count_;
  std::size_t max_descriptors_;
  std::vector<std::byte> blocks_;
  BlockCache cache_;
  std::vector<std::vector<std::uint64_t>> states_;
  std::vector<std::unique_ptr<FileServer>> servers_;
  std::uint64_t now_ = 1000;
  std::uint64_t next_request_ = 0;
};

FsMessage by_name(FsOp op, InodeNumber directory, std::string_view name, bool distributed) {
  FsMessage message;
  message.op = op;
  message.inode = directory;
  message.set_name(name);
  if (distributed) message.flags |= kDistributed;
  return message;
}

FsMessage on_inode(FsOp op, InodeNumber inode) {
  FsMessage message;
  message.op = op;
  message.inode = inode;
  return message;
}

FsMessage open_create(InodeNumber directory, std::string_view name, bool distributed) {
  FsMessage message = by_name(FsOp::open, directory, name, distributed);
  message.arg0 = O_CREAT | O_RDWR;
  message.arg1 = 0644;
  return message;
}

ServerIndex where(InodeNumber directory, std::string_view name, bool distributed, std::uint16_t n) {
  return entry_server(directory, distributed, name, n);
}

TEST(FileServer, RootLivesOnServerZeroAndInodesNameTheirServer) {
  Fleet fleet(3);
  EXPECT_TRUE(fleet.server(0).holds_inode(kRootInode));
  EXPECT_FALSE(fleet.server(1).holds_inode(kRootInode));
  for (int i = 0; i < 12; ++i) {
    const std::string name = "d" + std::to_string(i);
    const ServerIndex s = where(kRootInode, name, true, 3);
    FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, name, true);
    mkdir.arg0 = 0755;
    const FsMessage reply = fleet.call(s, mkdir);
    ASSERT_EQ(reply.status, 0);
    EXPECT_EQ(home_of(reply.inode), s);
    EXPECT_TRUE(fleet.server(s).holds_inode(reply.inode));
  }
}

TEST(FileServer, DistributedDirectorySpreadsItsEntries) {
  Fleet fleet(3);
  std::set<ServerIndex> used;
  for (int i = 0; i < 30; ++i) {
    const std::string name = "f" + std::to_string(i);
    const ServerIndex s = where(kRootInode, name, true, 3);
    used.insert(s);
    ASSERT_EQ(fleet.call(s, open_create(kRootInode, name, true)).status, 0);
    // Any other server refuses the entry.
    EXPECT_EQ(fleet.call((s + 1) % 3, open_create(kRootInode, name, true)).status, -ESTALE);
  }
  EXPECT_EQ(used.size(), 3u);
  std::size_t total = 0;
  for (ServerIndex s = 0; s < 3; ++s) total += fleet.server(s).entries_of(kRootInode).size();
  EXPECT_EQ(total, 30u);
}

TEST(FileServer, NameErrorsGiveLinuxErrnos) {
  Fleet fleet(1);
  EXPECT_EQ(fleet.call(0, by_name(FsOp::resolve, kRootInode, "missing", false)).status, -ENOENT);
  FsMessage open = by_name(FsOp::open, kRootInode, "missing", false);
  EXPECT_EQ(fleet.call(0, open).status, -ENOENT);
  ASSERT_EQ(fleet.call(0, open_create(kRootInode, "file", false)).status, 0);
  FsMessage exclusive = open_create(kRootInode, "file", false);
  exclusive.arg0 |= O_EXCL;
  EXPECT_EQ(fleet.call(0, exclusive).status, -EEXIST);
  EXPECT_EQ(fleet.call(0, by_name(FsOp::mkdir, kRootInode, "file", false)).status, -EEXIST);
  const InodeNumber file = fleet.call(0, by_name(FsOp::resolve, kRootInode, "file", false)).inode;
  EXPECT_EQ(fleet.call(0, open_create(file, "inside", false)).status, -ENOTDIR);
  EXPECT_EQ(fleet.call(0, by_name(FsOp::rm_map, kRootInode, "nope", false)).status, -ENOENT);
  const InodeNumber dir = fleet.call(0, by_name(FsOp::mkdir, kRootInode, "dir", false)).inode;
  FsMessage write_dir = on_inode(FsOp::open, dir);
  write_dir.flags = kByInode;
  write_dir.arg0 = O_WRONLY;
  EXPECT_EQ(fleet.call(0, write_dir).status, -EISDIR);
  EXPECT_EQ(fleet.call(0, by_name(FsOp::rm_map, kRootInode, "dir", false)).status, -EISDIR);
}

TEST(FileServer, DescriptorLimitGivesEmfileAndInodeLimitEnospc) {
  Fleet fleet(1, 256 * 1024, 64, 8);
  int opened = 0;
  FsMessage reply;
  do {
    reply = fleet.call(0, open_create(kRootInode, "f", false));
    if (reply.status == 0) ++opened;
  } while (reply.status == 0 && opened < 100);
  EXPECT_EQ(opened, 8);
  EXPECT_EQ(reply.status, -EMFILE);
  int made = 0;
  do {
    reply = fleet.call(0, by_name(FsOp::mkdir, kRootInode, "d" + std::to_string(made), false));
    if (reply.status == 0) ++made;
  } while (reply.status == 0 && made < 100);
  EXPECT_EQ(reply.status, -ENOSPC);
}

TEST(FileServer, ThreePhaseRmdirRefusesNonEmptyAndHoldsCreates) {
  Fleet fleet(3);
  const ServerIndex home = where(kRootInode, "d", true, 3);
  FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, "d", true);
  mkdir.arg1 = 1;  // distributed
  const InodeNumber d = fleet.call(home, mkdir).inode;
  const ServerIndex x_at = where(d, "x", true, 3);
  ASSERT_EQ(fleet.call(x_at, open_create(d, "x", true)).status, 0);

  FsMessage lock = on_inode(FsOp::rmdir_lock, d);
  lock.client = 2;
  ASSERT_EQ(fleet.call(home, lock).status, 0);
  // Marking: the server holding "x" refuses, the others mark.
  for (ServerIndex s = 0; s < 3; ++s) {
    FsMessage mark = on_inode(FsOp::rmdir_mark, d);
    mark.client = 2;
    EXPECT_EQ(fleet.call(s, mark).status, s == x_at ? -ENOTEMPTY : 0);
  }
  // A create into the directory at a marked server is held, not answered.
  ServerIndex marked = (x_at + 1) % 3;
  std::string name;
  for (int i = 0; name.empty(); ++i) {
    if (where(d, "y" + std::to_string(i), true, 3) == marked) name = "y" + std::to_string(i);
  }
  FsMessage create = open_create(d, name, true);
  create.client = 3;
  create.request = 77;
  EXPECT_EQ(fleet.call(marked, create).op, FsOp::none);
  EXPECT_EQ(fleet.server(marked).stats().delayed, 1u);
  // Abort releases it: the create goes ahead.
  for (ServerIndex s = 0; s < 3; ++s) {
    FsMessage abort = on_inode(FsOp::rmdir_abort, d);
    abort.client = 2;
    abort.request = 100;  // after the lock and marks: a client numbers its requests upwards
    Collect out;
    fleet.server(s).handle(2, abort, 5000, out);
    if (s == marked) {
      bool created = false;
      for (const Sent& sent : out.sent) {
        created |= sent.to == 3 && sent.message.request == 77 && sent.message.status == 0;
      }
      EXPECT_TRUE(created);
    }
    EXPECT_FALSE(fleet.server(s).marked(d));
  }
}

TEST(FileServer, RemoveAtHomeRefusesANonEmptyDirectoryWithoutLockingIt) {
  Fleet fleet(1);
  const InodeNumber d = fleet.call(0, by_name(FsOp::mkdir, kRootInode, "d", false)).inode;
  ASSERT_EQ(fleet.call(0, open_create(d, "x", false)).status, 0);
  FsMessage lock = on_inode(FsOp::rmdir_lock, d);
  lock.arg0 = kRemoveAtHome;
  lock.client = 2;
  EXPECT_EQ(fleet.call(0, lock).status, -ENOTEMPTY);
  EXPECT_FALSE(fleet.server(0).marked(d));
  EXPECT_FALSE(fleet.server(0).removed(d));
  // Not locked: another client's lock is answered at once, not held back.
  FsMessage other = on_inode(FsOp::rmdir_lock, d);
  other.client = 3;
  EXPECT_EQ(fleet.call(0, other).status, 0);
}

// The whole rmdir of an empty directory in one message: removed, freed, nothing left locked or
// marked, and a later create into it refused.
TEST(FileServer, RemoveAtHomeOfAnEmptyDirectoryRemovesItAtOnce) {
  Fleet fleet(1);
  const InodeNumber d = fleet.call(0, by_name(FsOp::mkdir, kRootInode, "d", false)).inode;
  FsMessage lock = on_inode(FsOp::rmdir_lock, d);
  lock.arg0 = kRemoveAtHome;
  lock.client = 2;
  ASSERT_EQ(fleet.call(0, lock).status, 0);
  EXPECT_TRUE(fleet.server(0).removed(d));
  EXPECT_FALSE(fleet.server(0).marked(d));
  EXPECT_FALSE(fleet.server(0).holds_inode(d));
  FsMessage create = open_create(d, "late", false);
  create.client = 3;
  EXPECT_EQ(fleet.call(0, create).status, -ENOENT);
  FsMessage again = on_inode(FsOp::rmdir_lock, d);
  again.arg0 = kRemoveAtHome;
  again.client = 3;
  EXPECT_EQ(fleet.call(0, again).status, -ENOENT);
}

TEST(FileServer, ResolveWithStatCarriesTheAttributesOfALocalInode) {
  Fleet fleet(2);
  const ServerIndex at = where(kRootInode, "f", true, 2);
  const FsMessage opened = fleet.call(at, open_create(kRootInode, "f", true));
  ASSERT_EQ(opened.status, 0);
  FsMessage resolve = by_name(FsOp::resolve, kRootInode, "f", true);
  resolve.arg0 = kResolveWithStat;
  const FsMessage reply = fleet.call(at, resolve);
  ASSERT_EQ(reply.status, 0);
  auto stat = stat_of(reply);
  ASSERT_TRUE(stat);
  EXPECT_EQ(stat->inode, opened.inode);
  EXPECT_EQ(stat->mode & 0777, 0644u);
  // Without the argument the reply stays bare.
  const FsMessage bare = fleet.call(at, by_name(FsOp::resolve, kRootInode, "f", true));
  EXPECT_EQ(bare.payload_length, 0u);
}

TEST(FileServer, CommittedRmdirRefusesLaterCreates) {
  Fleet fleet(2);
  const ServerIndex home = where(kRootInode, "gone", true, 2);
  FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, "gone", true);
  mkdir.arg1 = 1;
  const InodeNumber d = fleet.call(home, mkdir).inode;
  ASSERT_EQ(fleet.call(home, on_inode(FsOp::rmdir_lock, d)).status, 0);
  for (ServerIndex s = 0; s < 2; ++s) ASSERT_EQ(fleet.call(s, on_inode(FsOp::rmdir_mark, d)).status, 0);
  for (ServerIndex s = 0; s < 2; ++s) ASSERT_EQ(fleet.call(s, on_inode(FsOp::rmdir_commit, d)).status, 0);
  FsMessage rm = by_name(FsOp::rm_map, kRootInode, "gone", true);
  rm.flags |= kDirOk;
  ASSERT_EQ(fleet.call(home, rm).status, 0);
  EXPECT_FALSE(fleet.server(home).holds_inode(d));
  for (ServerIndex s = 0; s < 2; ++s) {
    EXPECT_TRUE(fleet.server(s).removed(d));
    for (int i = 0; i < 10; ++i) {
      const std::string name = "n" + std::to_string(i);
      if (where(d, name, true, 2) != s) continue;
      EXPECT_EQ(fleet.call(s, open_create(d, name, true)).status, -ENOENT);
    }
  }
}

// Whoever learned the name hears of its change: a RESOLVE's client, and the client whose open or
// mkdir by name made or found it (it keeps the answer as a lookup).
TEST(FileServer, RenameAndUnlinkInvalidateLookers) {
  Fleet fleet(1);
  ASSERT_EQ(fleet.call(0, open_create(kRootInode, "a", false)).status, 0);  // client 1
  FsMessage made = by_name(FsOp::mkdir, kRootInode, "d", false);
  made.client = 3;
  ASSERT_EQ(fleet.call(0, made).status, 0);
  FsMessage resolve = by_name(FsOp::resolve, kRootInode, "a", false);
  resolve.client = 5;
  const InodeNumber a = fleet.call(0, resolve).inode;
  fleet.other.clear();
  FsMessage rm = by_name(FsOp::rm_map, kRootInode, "a", false);
  rm.client = 7;
  rm.arg0 = a;
  rm.flags |= kKeepLink;
  ASSERT_EQ(fleet.call(0, rm).status, 0);
  ASSERT_EQ(fleet.other.size(), 2u);
  std::vector<ClientId> told;
  for (const auto& sent : fleet.other) {
    EXPECT_EQ(sent.message.op, FsOp::invalidate);
    EXPECT_EQ(sent.message.name(), "a");
    told.push_back(static_cast<ClientId>(sent.to));
  }
  std::sort(told.begin(), told.end());
  EXPECT_EQ(told, (std::vector<ClientId>{1, 5}));
  fleet.other.clear();
  FsMessage rmdir = by_name(FsOp::rm_map, kRootInode, "d", false);
  rmdir.client = 7;
  rmdir.flags |= kDirOk;
  ASSERT_EQ(fleet.call(0, rmdir).status, 0);
  ASSERT_EQ(fleet.other.size(), 1u);
  EXPECT_EQ(fleet.other[0].to, 3u);
}

// Whoever was given an inode's attributes (FSTAT, a RESOLVE with stat, a listing of its parent)
// hears of their change before the change is answered, once; a read changes nothing.
TEST(FileServer, AttributeChangesInvalidateTheirHoldersBeforeTheReply) {
  Fleet fleet(1);
  const FsMessage opened = fleet.call(0, open_create(kRootInode, "f", false));  // client 1
  ASSERT_EQ(opened.status, 0);
  FsMessage made = by_name(FsOp::mkdir, kRootInode, "d", false);
  made.arg0 = 0755;
  const InodeNumber d = fleet.call(0, made).inode;
  FsMessage fstat = on_inode(FsOp::fstat, opened.inode);
  fstat.client = 3;
  ASSERT_EQ(fleet.call(0, fstat).status, 0);
  FsMessage listing = on_inode(FsOp::dirent, kRootInode);
  listing.client = 5;
  const FsMessage listed = fleet.call(0, listing);
  ASSERT_EQ(listed.status, 0);
  int with_stat = 0;
  ASSERT_TRUE(for_each_dirent(listed, [&](std::string_view name, InodeNumber inode, std::uint64_t,
                                          const StatRecord* stat) {
    if (stat == nullptr) return;
    ++with_stat;
    EXPECT_EQ(name, "d");  // a subdirectory's attributes come along, a file's do not
    EXPECT_EQ(inode, d);
    EXPECT_EQ(stat->mode, static_cast<std::uint32_t>(S_IFDIR | 0755));
  }));
  EXPECT_EQ(with_stat, 1);
  ASSERT_EQ(fleet.call(0, on_inode(FsOp::fstat, opened.inode)).status, 0);  // a read tells nobody
  EXPECT_TRUE(fleet.other.empty());

  FsMessage chmod = on_inode(FsOp::chmod, opened.inode);
  chmod.client = 7;
  chmod.request = 100;
  chmod.arg0 = 0600;
  Collect out;
  fleet.server(0).handle(7, chmod, 5000, out);
  ASSERT_EQ(out.sent.size(), 3u);  // clients 3 and 1 (its FSTAT above), then the reply
  std::vector<ClientId> told;
  for (std::size_t i = 0; i + 1 < out.sent.size(); ++i) {
    EXPECT_EQ(out.sent[i].message.op, FsOp::invalidate);
    EXPECT_EQ(out.sent[i].message.flags, kAttributes);
    EXPECT_EQ(out.sent[i].message.inode, opened.inode);
    told.push_back(out.sent[i].to);
  }
  std::sort(told.begin(), told.end());
  EXPECT_EQ(told, (std::vector<ClientId>{1, 3}));
  EXPECT_EQ(out.sent.back().message.op, FsOp::reply);
  chmod.request = 101;  // nobody holds them any more
  Collect again;
  fleet.server(0).handle(7, chmod, 5001, again);
  EXPECT_EQ(again.sent.size(), 1u);

  FsMessage chmod_d = on_inode(FsOp::chmod, d);
  chmod_d.client = 9;  // client 7's numbers ran ahead of the fleet's
  chmod_d.arg0 = 0700;
  ASSERT_EQ(fleet.call(0, chmod_d).status, 0);
  ASSERT_EQ(fleet.other.size(), 1u);  // the listing's client
  EXPECT_EQ(fleet.other[0].to, 5u);
  EXPECT_EQ(fleet.other[0].message.flags, kAttributes);
}

// An empty file opened for writing comes with its first block when the client expects to write
// (arg2); one opened for reading does not, nor one the client expects to leave empty.
TEST(FileServer, AnOpenForWritingOfAnEmptyFileGivesItsFirstBlock) {
  Fleet fleet(1);
  const std::uint32_t free_at_start = fleet.server(0).free_blocks();
  FsMessage writing = open_create(kRootInode, "f", false);
  writing.arg2 = 100;
  const FsMessage opened = fleet.call(0, writing);
  ASSERT_EQ(opened.status, 0);
  ASSERT_EQ(opened.extra().size(), sizeof(BlockId));
  EXPECT_EQ(fleet.server(0).free_blocks(), free_at_start - 1);
  BlockId first;
  std::memcpy(&first, opened.extra().data(), sizeof(first));
  const FsMessage listed = fleet.call(0, on_inode(FsOp::blocks, opened.inode));
  ASSERT_EQ(listed.status, 0);
  ASSERT_EQ(listed.extra().size(), sizeof(BlockId));
  BlockId held;
  std::memcpy(&held, listed.extra().data(), sizeof(held));
  EXPECT_EQ(held, first);
  FsMessage reading = open_create(kRootInode, "g", false);
  reading.arg0 = O_CREAT | O_RDONLY;
  reading.arg2 = 100;
  const FsMessage read_only = fleet.call(0, reading);
  ASSERT_EQ(read_only.status, 0);
  EXPECT_TRUE(read_only.extra().empty());
  const FsMessage left_empty = fleet.call(0, open_create(kRootInode, "h", false));
  ASSERT_EQ(left_empty.status, 0);
  EXPECT_TRUE(left_empty.extra().empty());
  EXPECT_EQ(fleet.server(0).free_blocks(), free_at_start - 1);
  // Left empty, the file gives the block back with its last close.
  FsMessage close = on_inode(FsOp::close, opened.inode);
  close.arg0 = opened.arg0;
  ASSERT_EQ(fleet.call(0, close).status, 0);
  EXPECT_EQ(fleet.server(0).free_blocks(), free_at_start);
}

// An OPEN that says how far the client expects to write brings that many blocks (at most
// kOpenGrantBytes' worth), or one when the cache has no room for them; what is not written goes
// back at the last close.
TEST(FileServer, AnOpenBringsTheBlocksTheClientExpectsToWrite) {
  Fleet fleet(1, 256 * 1024, 32);
  const std::uint32_t free_at_start = fleet.server(0).free_blocks();
  FsMessage expecting = open_create(kRootInode, "f", false);
  expecting.arg2 = 10 * kBlockBytes;
  const FsMessage opened = fleet.call(0, expecting);
  ASSERT_EQ(opened.status, 0);
  EXPECT_EQ(opened.extra().size(), 10 * sizeof(BlockId));
  EXPECT_EQ(fleet.server(0).free_blocks(), free_at_start - 10);

  FsMessage greedy = open_create(kRootInode, "g", false);
  greedy.arg2 = 1 << 30;
  const FsMessage capped = fleet.call(0, greedy);
  ASSERT_EQ(capped.status, 0);
  EXPECT_EQ(capped.extra().size(), kOpenGrantBytes / kBlockBytes * sizeof(BlockId));
  ASSERT_LT(fleet.server(0).free_blocks(), kOpenGrantBytes / kBlockBytes);

  FsMessage crowded = open_create(kRootInode, "h", false);
  crowded.arg2 = kOpenGrantBytes;
  const FsMessage one = fleet.call(0, crowded);
  ASSERT_EQ(one.status, 0);
  EXPECT_EQ(one.extra().size(), sizeof(BlockId));

  for (const FsMessage* open : {&opened, &capped, &one}) {
    FsMessage close = on_inode(FsOp::close, open->inode);
    close.arg0 = open->arg0;
    ASSERT_EQ(fleet.call(0, close).status, 0);
  }
  EXPECT_EQ(fleet.server(0).free_blocks(), free_at_start);
}

TEST(FileServer, UnlinkedFileLivesUntilLastCloseAndBlocksWaitForIt) {
  Fleet fleet(1, 256 * 1024, 8);
  const FsMessage opened = fleet.call(0, open_create(kRootInode, "f", false));
  ASSERT_EQ(opened.status, 0);
  const InodeNumber f = opened.inode;
  FsMessage grow = on_inode(FsOp::blocks, f);
  grow.arg1 = 3 * kBlockBytes;
  ASSERT_EQ(fleet.call(0, grow).arg0, 3u);
  const std::uint32_t free_before = fleet.server(0).free_blocks();
  // Truncate while open: the blocks are retired, not freed.
  FsMessage trunc = on_inode(FsOp::trunc, f);
  trunc.arg0 = 0;
  ASSERT_EQ(fleet.call(0, trunc).status, 0);
  EXPECT_EQ(fleet.server(0).free_blocks(), free_before);
  // Unlink while open: the inode stays.
  ASSERT_EQ(fleet.call(0, by_name(FsOp::rm_map, kRootInode, "f", false)).status, 0);
  EXPECT_TRUE(fleet.server(0).holds_inode(f));
  EXPECT_EQ(fleet.call(0, on_inode(FsOp::fstat, f)).status, 0);
  FsMessage close;
  close.op = FsOp::close;
  close.arg0 = opened.arg0;
  ASSERT_EQ(fleet.call(0, close).status, 0);
  EXPECT_FALSE(fleet.server(0).holds_inode(f));
  EXPECT_EQ(fleet.server(0).free_blocks(), free_before + 3);
}

TEST(FileServer, RestartKeepsEveryAcknowledgedChangeAndAnswersRetries) {
  Fleet fleet(2, 64 * 1024);
  std::vector<std::byte> before;
  FsMessage last;
  for (int i = 0; i < 200; ++i) {  // enough to wrap the log into a checkpoint
    const std::string name = "f" + std::to_string(i % 20);
    const ServerIndex s = where(kRootInode, name, true, 2);
    FsMessage create = open_create(kRootInode, name, true);
    create.client = 9;
    last = fleet.call(s, create);
    FsMessage close;
    close.op = FsOp::close;
    close.client = 9;
    close.arg0 = last.arg0;
    if (last.status == 0) {
      ASSERT_EQ(fleet.call(s, close).status, 0);
    }
    FsMessage chmod = on_inode(FsOp::chmod, last.inode);
    chmod.client = 9;
    chmod.arg0 = 0600 + i % 8;
    ASSERT_EQ(fleet.call(s, chmod).status, 0);
  }
  EXPECT_GT(fleet.server(0).stats().checkpoints + fleet.server(1).stats().checkpoints, 2u);
  for (ServerIndex s = 0; s < 2; ++s) {
    before = fleet.server(s).image();
    ASSERT_TRUE(fleet.restart(s));
    EXPECT_EQ(fleet.server(s).image(), before) << "server " << s;
  }
  // A retried request is answered from the reply cache, not run again.
  FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, "once", true);
  mkdir.client = 4;
  mkdir.request = 1234;
  const ServerIndex s = where(kRootInode, "once", true, 2);
  const FsMessage first = fleet.call(s, mkdir);
  ASSERT_EQ(first.status, 0);
  ASSERT_TRUE(fleet.restart(s));
  const FsMessage again = fleet.call(s, mkdir);
  EXPECT_EQ(again.status, 0);
  EXPECT_EQ(again.inode, first.inode);
  EXPECT_EQ(fleet.server(s).stats().retried, 1u);
}

// rmdir in one message: the home removes the directory and, when it holds the entry and the
// entry still names that directory, the entry too; anything else leaves the entry to RM_MAP.
TEST(FileServer, RemoveAtHomeTakesTheDirectorysOwnEntry) {
  Fleet fleet(1);
  auto make = [&](std::string_view name) {
    return fleet.call(0, by_name(FsOp::mkdir, kRootInode, name, true)).inode;
  };
  auto remove = [&](InodeNumber directory, std::string_view name) {
    FsMessage lock = by_name(FsOp::rmdir_lock, directory, name, true);
    lock.arg0 = kRemoveAtHome | kRemoveEntry;
    lock.arg1 = kRootInode;
    return fleet.call(0, lock);
  };
  auto names = [&] {
    std::vector<std::string> out;
    for (const auto& [name, inode] : fleet.server(0).entries_of(kRootInode)) out.push_back(name);
    return out;
  };
  const InodeNumber d = make("d");
  const FsMessage removed = remove(d, "d");
  EXPECT_EQ(removed.status, 0);
  EXPECT_EQ(removed.arg0, kRemoveEntry);
  EXPECT_TRUE(fleet.server(0).removed(d));
  EXPECT_TRUE(names().empty());

  // The name now belongs to another directory: the first one goes, the entry stays.
  const InodeNumber e = make("e");
  const InodeNumber other = make("other");
  const FsMessage wrong = remove(e, "other");
  EXPECT_EQ(wrong.status, 0);
  EXPECT_EQ(wrong.arg0, 0u);
  EXPECT_TRUE(fleet.server(0).removed(e));
  EXPECT_FALSE(fleet.server(0).removed(other));
  EXPECT_EQ(names(), (std::vector<std::string>{"e", "other"}));

  // Refused (not empty): nothing goes.
  ASSERT_EQ(fleet.call(0, open_create(other, "x", false)).status, 0);
  const FsMessage refused = remove(other, "other");
  EXPECT_EQ(refused.status, -ENOTEMPTY);
  EXPECT_FALSE(fleet.server(0).removed(other));
  EXPECT_EQ(names(), (std::vector<std::string>{"e", "other"}));
}

// A rename whose two names live at one server is one ADD_MAP: the old name goes in the same
// step, and only when it still names the file; a refusal changes nothing.
TEST(FileServer, AddMapMovesTheOldEntryInTheSameStep) {
  Fleet fleet(1);
  const InodeNumber a = fleet.call(0, open_create(kRootInode, "a", false)).inode;
  const InodeNumber b = fleet.call(0, open_create(kRootInode, "b", false)).inode;
  auto move = [&](std::string_view from, std::string_view to, InodeNumber inode) {
    FsMessage add = by_name(FsOp::add_map, kRootInode, to, false);
    add.arg0 = inode;
    add.arg1 = type_word(FileType::regular, false);
    add.flags |= kReplace | kMoveEntry;
    add.arg2 = kRootInode;
    EXPECT_TRUE(add.set_extra(std::span(from.data(), from.size())));
    return fleet.call(0, add);
  };
  auto names = [&] {
    std::vector<std::string> out;
    for (const auto& [name, inode] : fleet.server(0).entries_of(kRootInode)) out.push_back(name);
    return out;
  };
  const FsMessage moved = move("a", "c", a);
  EXPECT_EQ(moved.status, 0);
  EXPECT_EQ(moved.arg0, 0u);
  EXPECT_EQ(names(), (std::vector<std::string>{"b", "c"}));

  // The old name names another file now: refused, nothing changes.
  EXPECT_EQ(move("b", "d", a).status, -ENOENT);
  EXPECT_EQ(names(), (std::vector<std::string>{"b", "c"}));

  // Over an existing file: it loses its link here (its home), the old name goes.
  const FsMessage replaced = move("c", "b", a);
  EXPECT_EQ(replaced.status, 0);
  EXPECT_EQ(replaced.arg0, b);
  EXPECT_EQ(replaced.flags & kLinkDropped, kLinkDropped);
  EXPECT_EQ(names(), (std::vector<std::string>{"b"}));
}

// A client's end replayed from the log leaves no reply cached for it: the seat's next holder
// numbers its requests from its own start, and none of them is taken for an old retry.
TEST(FileServer, AClientsEndReplayedLeavesItsNextHolderUnanswered) {
  Fleet fleet(1);
  FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, "before", false);
  mkdir.client = 6;
  mkdir.request = 50;
  ASSERT_EQ(fleet.call(0, mkdir).status, 0);
  Collect out;
  fleet.server(0).client_gone(6, 3000, out);
  ASSERT_TRUE(fleet.restart(0));
  FsMessage next = by_name(FsOp::mkdir, kRootInode, "after", false);
  next.client = 6;
  next.request = 1;
  const FsMessage reply = fleet.call(0, next);
  EXPECT_EQ(reply.op, FsOp::reply);
  EXPECT_EQ(reply.status, 0);
  EXPECT_EQ(fleet.server(0).stats().stale_retries, 0u);
}

TEST(FileServer, MalformedInputIsCountedAndDropped) {
  Fleet fleet(1);
  Collect out;
  std::mt19937_64 random(11);
  for (int i = 0; i < 5000; ++i) {
    Message chunk;
    chunk.kind = kFsChunkKind;
    for (auto& byte : chunk.body) byte = static_cast<std::byte>(random());
    chunk.body[2] = std::byte{0};
    chunk.body[3] = std::byte{1};  // a one-chunk message of random fields
    fleet.server(0).receive(1, chunk, 1, out);
  }
  EXPECT_GT(fleet.server(0).stats().malformed, 4500u);
  // A spoofed sender is dropped too.
  FsMessage spoofed = by_name(FsOp::resolve, kRootInode, "x", false);
  spoofed.client = 2;
  spoofed.request = 1;
  const auto before = fleet.server(0).stats().malformed;
  fleet.server(0).handle(1, spoofed, 1, out);
  EXPECT_EQ(fleet.server(0).stats().malformed, before + 1);
  // The server still works.
  EXPECT_EQ(fleet.call(0, open_create(kRootInode, "fine", false)).status, 0);
}

TEST(FileServer, RmdirMarksAndLocksSurviveARestartBetweenPhases) {
  Fleet fleet(2);
  const ServerIndex home = where(kRootInode, "d", true, 2);
  FsMessage mkdir = by_name(FsOp::mkdir, kRootInode, "d", true);
  mkdir.arg1 = 1;
  const InodeNumber d = fleet.call(home, mkdir).inode;
  ASSERT_EQ(fleet.call(home, on_inode(FsOp::rmdir_lock, d)).status, 0);
  for (ServerIndex s = 0; s < 2; ++s) ASSERT_EQ(fleet.call(s, on_inode(FsOp::rmdir_mark, d)).status, 0);
  for (ServerIndex s = 0; s < 2; ++s) {
    ASSERT_TRUE(fleet.restart(s));
    EXPECT_TRUE(fleet.server(s).marked(d));
  }
  // Another client's rmdir of the same directory waits for the lock the restart kept.
  FsMessage other_lock = on_inode(FsOp::rmdir_lock, d);
  other_lock.client = 8;
  EXPECT_EQ(fleet.call(home, other_lock).op, FsOp::none);
  for (ServerIndex s = 0; s < 2; ++s) ASSERT_EQ(fleet.call(s, on_inode(FsOp::rmdir_commit, d)).status, 0);
  for (ServerIndex s = 0; s < 2; ++s) {
    EXPECT_TRUE(fleet.server(s).removed(d));
    EXPECT_FALSE(fleet.server(s).marked(d));
  }
  EXPECT_FALSE(fleet.server(home).holds_inode(d));
}

TEST(FileServer, AGoneClientsMarksGoAndHeldCreatesProceed) {
  Fleet fleet(1);
  const InodeNumber d = fleet.call(0, by_name(FsOp::mkdir, kRootInode, "d", false)).inode;
  FsMessage lock = on_inode(FsOp::rmdir_lock, d);
  lock.client = 6;
  ASSERT_EQ(fleet.call(0, lock).status, 0);
  FsMessage mark = on_inode(FsOp::rmdir_mark, d);
  mark.client = 6;
  ASSERT_EQ(fleet.call(0, mark).status, 0);
  FsMessage create = open_create(d, "x", false);
  create.client = 7;
  create.request = 500;
  EXPECT_EQ(fleet.call(0, create).op, FsOp::none);  // held
  Collect out;
  fleet.server(0).client_gone(6, 3000, out);
  EXPECT_FALSE(fleet.server(0).marked(d));
  bool created = false;
  for (const Sent& sent : out.sent) created |= sent.to == 7 && sent.message.status == 0;
  EXPECT_TRUE(created);
  EXPECT_EQ(fleet.server(0).entries_of(d).size(), 1u);
}

TEST(FileServer, AGoneClientsDescriptorsCloseAndItsOrphansGo) {
  Fleet fleet(1);
  FsMessage create = open_create(kRootInode, "f", false);
  create.client = 6;
  const FsMessage opened = fleet.call(0, create);
  ASSERT_EQ(opened.status, 0);
  FsMessage unlink = by_name(FsOp::rm_map, kRootInode, "f", false);
  ASSERT_EQ(fleet.call(0, unlink).status, 0);
  EXPECT_TRUE(fleet.server(0).holds_inode(opened.inode));
  Collect out;
  fleet.server(0).client_gone(6, 2000, out);
  EXPECT_EQ(fleet.server(0).descriptor_count(), 0u);
  EXPECT_FALSE(fleet.server(0).holds_inode(opened.inode));
  ASSERT_TRUE(fleet.restart(0));  // the notice was logged like any change
  EXPECT_EQ(fleet.server(0).descriptor_count(), 0u);
  EXPECT_FALSE(fleet.server(0).holds_inode(opened.inode));
}

// Well-formed requests with random fields (ops, inodes, descriptors, offsets, flags) from a few
// clients: the server answers each without crashing, and a restart rebuilds the same tables.
TEST(FileServer, RandomWellFormedRequestsNeverCrashAndReplayExactly) {
  std::mt19937_64 random(21);
  for (int round = 0; round < 20; ++round) {
    Fleet fleet(2, 128 * 1024, 64);
    std::vector<InodeNumber> inodes = {kRootInode};
    std::vector<std::uint64_t> descriptors = {1, 2, 3};
    std::uint64_t answered = 0;
    for (int i = 0; i < 400; ++i) {
      FsMessage request;
      request.op = static_cast<FsOp>(1 + random() % (static_cast<int>(FsOp::utimens)));
      request.client = static_cast<ClientId>(1 + random() % 3);
      request.inode = random() % 4 == 0 ? random() : inodes[random() % inodes.size()];
      request.arg0 = random() % 3 == 0 ? descriptors[random() % descriptors.size()] : random() % 9000;
      request.arg1 = random() % 2 == 0 ? random() % 9000 : type_word(FileType::regular, false);
      request.arg2 = random() % 4;
      request.flags = static_cast<std::uint8_t>(random());
      if (random() % 2 == 0) request.set_name("n" + std::to_string(random() % 6));
      if (request.op == FsOp::add_map && request.arg0 == 0) request.arg0 = kRootInode;
      const std::string target = "t";
      if (request.op == FsOp::symlink) request.set_extra(std::span(target.data(), 1));
      if (!well_formed(request)) continue;
      const FsMessage reply = fleet.call(static_cast<ServerIndex>(random() % 2), request);
      if (reply.op == FsOp::reply) ++answered;
      if (reply.status == 0 && reply.inode != 0) inodes.push_back(reply.inode);
      if (request.op == FsOp::open && reply.status == 0) descriptors.push_back(reply.arg0);
    }
    EXPECT_GT(answered, 50u);
    for (ServerIndex s = 0; s < 2; ++s) {
      const std::vector<std::byte> before = fleet.server(s).image();
      ASSERT_TRUE(fleet.restart(s));
      EXPECT_EQ(fleet.server(s).image(), before) << "round " << round << " server " << s;
    }
  }
}

TEST(FileServer, HostileStateRegionGivesAnErrorNeverACrash) {
  std::mt19937_64 random(5);
  for (int round = 0; round < 100; ++round) {
    Fleet fleet(1, 64 * 1024);
    for (int i = 0; i < 10; ++i) {
      ASSERT_EQ(fleet.call(0, open_create(kRootInode, "f" + std::to_string(i), false)).status, 0);
    }
    auto state = fleet.state(0);
    for (int flips = 0; flips < 20; ++flips) {
      state[64 + random() % 30000] = static_cast<std::byte>(random());
    }
    // Checksums catch the damage: the server starts from what is intact, or refuses.
    if (fleet.restart(0)) {
      EXPECT_EQ(fleet.call(0, open_create(kRootInode, "after", false)).status, 0);
    }
  }
  // A checkpoint that passes its checksum but holds garbage (a hostile writer) is refused.
  int refused = 0;
  for (int round = 0; round < 200; ++round) {
    Fleet fleet(1, 64 * 1024);
    for (int i = 0; i < 5; ++i) {
      ASSERT_EQ(fleet.call(0, open_create(kRootInode, "f" + std::to_string(i), false)).status, 0);
    }
    std::vector<std::byte> image = fleet.server(0).image();
    for (int flips = 0; flips < 3; ++flips) {
      image[8 + random() % (image.size() - 8)] = static_cast<std::byte>(random());
    }
    {
      auto log = StateLog::attach(fleet.state(0), (std::uint64_t{1} << 16) | 0);
      ASSERT_TRUE(log.ok());
      ASSERT_TRUE(log->write_checkpoint(image).ok());
    }
    if (!fleet.restart(0)) ++refused;
  }
  EXPECT_GT(refused, 50);
}

}  // namespace
}  // namespace flotilla::fs
