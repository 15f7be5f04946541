// The file fleet's messages (components/formats/fs_messages.hpp) on the real file server: each
// step of the input is either a whole message's bytes, decoded (a decoded message encodes and
// decodes back to the same size) and handled by a FileServer, or one raw 64-byte chunk for the
// server's reassembly (FileServer::receive), from one of three clients. The server runs over its
// own state region and a small block cache, as in its unit tests.
#include <array>
#include <cstring>
#include <memory>
#include <vector>

#include "components/formats/fs_messages.hpp"
#include "components/fs/file_server.hpp"
#include "fuzz/fuzz_input.hpp"

namespace {

using namespace flotilla;
using namespace flotilla::fs;

class Discard final : public ServerOutputs {
 public:
  void send(ClientId, const FsMessage&) override {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::FuzzInput input(data, size);
  std::vector<std::byte> blocks(64 * kBlockBytes);
  std::vector<std::uint64_t> state(256 * 1024 / 8, 0);
  auto cache = BlockCache::attach(blocks, 1);
  if (!cache) fuzz::invariant_broken();
  ServerConfig config;
  config.max_inodes = 40;
  auto started = FileServer::start(config, std::as_writable_bytes(std::span(state)), *cache);
  if (!started) fuzz::invariant_broken();
  FileServer& server = **started;
  Discard out;
  std::uint64_t now_ns = 1;
  std::array<std::byte, kHeaderBytes + kMaxPayload> encoded{};
  while (!input.empty()) {
    const std::uint8_t step = input.byte();
    const ClientId client = step % 3;
    now_ns += 1000;
    if ((step & 0x80) == 0) {
      const auto bytes = input.bytes(kHeaderBytes + kMaxPayload);
      auto message = decode(bytes);
      if (!message) continue;
      const std::size_t length = encode(*message, encoded);
      fuzz::require(length == encoded_size(*message));
      auto again = decode(std::span<const std::byte>(encoded).first(length));
      fuzz::require(again.ok() && encoded_size(*again) == length);
      if (well_formed(*message)) server.handle(client, *message, now_ns, out);
    } else if ((step & 0x40) == 0) {
      Message chunk{};
      chunk.kind = kFsChunkKind;
      const auto body = input.bytes(Message::kBodyBytes);
      if (!body.empty()) std::memcpy(chunk.body.data(), body.data(), body.size());
      server.receive(client, chunk, now_ns, out);
    } else {
      server.client_gone(client, now_ns, out);
    }
  }
  return 0;
}
