// One file server of the file fleet, sans-IO (in the smoltcp/MINIX style): it takes a request
// and produces messages through ServerOutputs; it does no I/O and runs no threads. The process
// around it (channels, supervisor) is not part of this class.
//
// What it holds:
//   - inodes whose numbers carry this server's index (fs_messages.hpp: home_of), never renamed;
//   - directory entries: (directory, name) -> inode and type. A distributed directory's entries
//     are spread over the servers by entry_server(); other directories keep theirs at home;
//   - descriptors (open-file state) with their holder count and, once shared, the offset;
//   - rmdir's three phases: a per-directory lock at the home server, marks, and the set of
//     directories removed here (creates into them fail with ENOENT). A client that dies mid-way
//     loses its lock and its marks (client_gone), so held creates go ahead;
//   - who looked each name up, so rename, unlink and rmdir can invalidate their caches, and who
//     was given each inode's attributes (FSTAT, a RESOLVE with stat, a listing), so any change to
//     them is invalidated before it is answered.
//
// Crash safety: every request that changes anything is logged (StateLog) before it runs, and runs
// deterministically, so replaying the log over the last checkpoint rebuilds exactly the tables the
// acknowledged replies came from. The last reply to each client is part of the tables: a client
// that retries after a restart gets the reply it missed instead of running the change twice.
// Lookup subscriptions are not kept: a restarted server's clients forget what they learned from it.
// Requests held back (creates into a marked directory, a second rmdir of a locked one) are not
// logged; after a restart their senders retry them.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "components/fs/block_cache.hpp"
#include "components/formats/fs_messages.hpp"
#include "components/fs/state_log.hpp"
#include "dataplane/result.hpp"

namespace flotilla::fs {

class ServerOutputs {
 public:
  virtual ~ServerOutputs() = default;
  virtual void send(ClientId to, const FsMessage& message) = 0;
};

struct ServerConfig {
  ServerIndex self = 0;
  std::uint16_t servers = 1;
  std::size_t max_inodes = 1 << 16;
  std::size_t max_descriptors = 4096;
  bool root_distributed = true;  // server 0's root directory
};

struct ServerStats {
  std::uint64_t requests = 0;
  std::uint64_t malformed = 0;  // dropped: failed decoding, spoofed sender, wrong server
  std::uint64_t retried = 0;    // answered from the reply cache
  std::uint64_t stale_retries = 0;  // dropped: ran before the client's last change here
  std::uint64_t delayed = 0;
  std::uint64_t invalidations = 0;
  std::uint64_t checkpoints = 0;
  std::uint64_t replayed = 0;  // log records replayed at start
};

class FileServer {
 public:
  // Comes back with every change acknowledged before a crash when `state` holds a previous run's
  // tables; formats `state` when it holds nothing valid. Errors for a region it cannot use or
  // contents that fail validation (the caller may then clear the region and start empty).
  static Result<std::unique_ptr<FileServer>> start(const ServerConfig& config,
                                                   std::span<std::byte> state, BlockCache cache);

  // A chunk from the channel whose peer is `peer`: reassembled, validated, handled. Malformed
  // input is counted and dropped.
  void receive(ClientId peer, const Message& chunk, std::uint64_t now_ns, ServerOutputs& out);
  // A complete message from `peer`.
  void handle(ClientId peer, const FsMessage& request, std::uint64_t now_ns, ServerOutputs& out);
  // The supervisor's notice that a client is gone: its descriptors close, its locks go.
  void client_gone(ClientId client, std::uint64_t now_ns, ServerOutputs& out);

  const ServerStats& stats() const { return stats_; }
  ServerIndex self() const { return config_.self; }

  // Inspection for tests and status.
  std::vector<std::pair<std::string, InodeNumber>> entries_of(InodeNumber directory) const;
  bool holds_inode(InodeNumber inode) const { return inodes_.contains(inode); }
  bool removed(InodeNumber directory) const { return removed_.contains(directory); }
  bool marked(InodeNumber directory) const { return marked_.contains(directory); }
  std::size_t inode_count() const { return inodes_.size(); }
  std::size_t descriptor_count() const { return descriptors_.size(); }
  std::uint32_t free_blocks() const { return allocator_.free_count(); }

  // The checkpoint image of the tables as they are (also used by tests to compare two servers).
  std::vector<std::byte> image() const;
  // Writes a checkpoint now.
  Status checkpoint();

 private:
  struct Inode {
    FileType type = FileType::none;
    bool distributed = false;
    std::uint32_t mode = 0;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    std::uint32_t nlink = 0;
    std::uint32_t opens = 0;  // descriptors naming it (derived from descriptors_)
    std::uint64_t size = 0;
    std::uint64_t atime = 0;
    std::uint64_t mtime = 0;
    std::uint64_t ctime = 0;
    std::vector<BlockId> blocks;
    std::vector<BlockId> retired;  // cut off by a truncate while descriptors were open
    std::string target;            // symlinks
  };
  struct Entry {
    InodeNumber inode = 0;
    std::uint64_t type = 0;  // type word
  };
  struct Descriptor {
    InodeNumber inode = 0;
    std::uint64_t offset = 0;   // meaningful once shared
    std::uint32_t flags = 0;    // open flags
    std::vector<ClientId> holders;  // one element per holding client
  };
  using EntryKey = std::pair<InodeNumber, std::string>;

  explicit FileServer(const ServerConfig& config, BlockCache cache);

  Status load(std::span<const std::byte> image);
  Status replay_record(std::span<const std::byte> record);
  static bool changes_state(const FsMessage& request);
  bool held_back(const FsMessage& request);
  void run(const FsMessage& request, std::uint64_t now_ns, ServerOutputs& out);
  FsMessage execute(const FsMessage& request, std::uint64_t now_ns, ServerOutputs& out);
  void release_held(InodeNumber directory, std::uint64_t now_ns, ServerOutputs& out);

  // Handlers: each returns the reply.
  FsMessage do_mkdir(const FsMessage& request, std::uint64_t now);
  // The reply a retry of `request` gets (last_reply_), as run and replay keep it.
  void remember_reply(const FsMessage& request, const FsMessage& reply);
  FsMessage do_rmdir(const FsMessage& request, ServerOutputs& out);
  // rmdir's own entry, named by a kRemoveEntry rmdir_lock: removed when this server holds it and
  // it still names `directory`.
  bool remove_entry_of(const FsMessage& request, InodeNumber directory, ServerOutputs& out);
  FsMessage do_dirent(const FsMessage& request);
  FsMessage do_add_map(const FsMessage& request, std::uint64_t now, ServerOutputs& out);
  FsMessage do_rm_map(const FsMessage& request, std::uint64_t now, ServerOutputs& out);
  // `client` hears of the next change to `key` (an invalidation): it may keep what it learned.
  void remember_looker(EntryKey key, ClientId client);
  // The same for an inode's attributes, which `client` was given.
  void remember_attribute_holder(InodeNumber inode, ClientId client);
  // The attributes of `inode` changed (or it is gone): its holders are told before the reply.
  void note_changed(InodeNumber inode);
  void invalidate_changed(ServerOutputs& out);
  FsMessage do_resolve(const FsMessage& request);
  FsMessage do_symlink(const FsMessage& request, std::uint64_t now);
  FsMessage do_open(const FsMessage& request, std::uint64_t now);
  FsMessage do_descriptor_op(const FsMessage& request, std::uint64_t now);
  FsMessage do_inode_op(const FsMessage& request, std::uint64_t now);
  static StatRecord stat_record(InodeNumber number, const Inode& inode);

  Result<InodeNumber> new_inode(FileType type, std::uint32_t mode, std::uint64_t now);
  bool creates_into(const FsMessage& request, InodeNumber& directory) const;
  // FLUSH: the size grows to the writer's `end`, mtime is `mtime` (0: now). 0 or -errno.
  int publish(Inode& inode, std::uint64_t end, std::uint64_t mtime, std::uint64_t now);
  void drop_link(InodeNumber inode);
  void maybe_free(InodeNumber inode);
  void release_blocks(std::vector<BlockId>& blocks);
  int resize(Inode& inode, std::uint64_t size, bool keep_cut_blocks);
  int allocate_up_to(Inode& inode, std::uint64_t bytes);
  void invalidate(const EntryKey& key, ClientId except, ServerOutputs& out);
  void close_descriptor(std::uint64_t id);
  Status log_request(const FsMessage& request, std::uint64_t now_ns);

  ServerConfig config_;
  BlockCache cache_;
  BlockAllocator allocator_;
  StateLog log_;
  bool replaying_ = false;
  std::vector<BlockId> released_in_replay_;

  // The tables (checkpointed).
  std::uint64_t next_local_ = 2;  // 1 is the root's number on server 0
  std::uint64_t next_descriptor_ = 1;
  std::map<InodeNumber, Inode> inodes_;
  std::map<EntryKey, Entry> entries_;
  std::map<InodeNumber, ClientId> marked_;  // directory -> the client whose rmdir marked it
  std::set<InodeNumber> removed_;
  std::map<InodeNumber, ClientId> rmdir_locks_;
  std::map<std::uint64_t, Descriptor> descriptors_;
  std::map<ClientId, FsMessage> last_reply_;

  // Not checkpointed (see the file comment).
  std::map<EntryKey, std::vector<ClientId>> lookers_;
  std::map<InodeNumber, std::vector<ClientId>> attribute_holders_;
  std::vector<InodeNumber> changed_;  // by the request being run
  std::deque<FsMessage> held_;  // creates into marked directories, rmdir locks queued
  std::map<ClientId, FsAssembler> assemblers_;
  ServerStats stats_;
};

}  // namespace flotilla::fs
