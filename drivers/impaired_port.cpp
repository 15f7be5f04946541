#include "drivers/impaired_port.hpp"

#include <array>
#include <charconv>

#include "dataplane/clock.hpp"
#include "dataplane/message.hpp"

namespace flotilla::drivers {
namespace {

Error bad_spec(const char* what) { return Error{Errc::invalid_argument, 0, what}; }

// "1%" -> 0.01, "0.01" -> 0.01; nullopt outside [0, 1].
std::optional<double> probability(std::string_view text) {
  const bool percent = !text.empty() && text.back() == '%';
  if (percent) text.remove_suffix(1);
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if (percent) value /= 100;
  if (value < 0 || value > 1) return std::nullopt;
  return value;
}

// "25ms", "500us", "2s" -> nanoseconds.
std::optional<std::uint64_t> duration_ns(std::string_view text) {
  std::uint64_t scale = 0;
  for (const auto& [suffix, factor] : {std::pair{std::string_view("ms"), std::uint64_t{1'000'000}},
                                      std::pair{std::string_view("us"), std::uint64_t{1'000}},
                                      std::pair{std::string_view("s"), std::uint64_t{1'000'000'000}}}) {
    if (text.size() > suffix.size() && text.ends_with(suffix)) {
      text.remove_suffix(suffix.size());
      scale = factor;
      break;
    }
  }
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (scale == 0 || error != std::errc{} || end != text.data() + text.size() || value > 60'000'000'000 / scale) {
    return std::nullopt;
  }
  return value * scale;
}

}  // namespace

Result<LinkImpairment> parse_impairment(std::string_view spec) {
  LinkImpairment impairment;
  while (!spec.empty()) {
    const std::size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    const std::size_t equals = item.find('=');
    if (equals == std::string_view::npos) return bad_spec("impairment: expected key=value");
    const std::string_view key = item.substr(0, equals);
    const std::string_view value = item.substr(equals + 1);
    if (key == "loss" || key == "reorder") {
      const auto p = probability(value);
      if (!p) return bad_spec("impairment: loss and reorder take a probability such as 1% or 0.01");
      (key == "loss" ? impairment.loss : impairment.reorder) = *p;
    } else if (key == "delay" || key == "gap") {
      const auto ns = duration_ns(value);
      if (!ns) return bad_spec("impairment: delay and gap take a duration such as 25ms (at most 60s)");
      (key == "delay" ? impairment.delay_ns : impairment.gap_ns) = *ns;
    } else if (key == "direction") {
      if (value != "rx" && value != "tx" && value != "both") {
        return bad_spec("impairment: direction is rx, tx or both");
      }
      impairment.rx = value != "tx";
      impairment.tx = value != "rx";
    } else if (key == "seed") {
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), impairment.seed);
      if (error != std::errc{} || end != value.data() + value.size()) return bad_spec("impairment: seed is a number");
    } else {
      return bad_spec("impairment: unknown key (loss, delay, reorder, gap, direction, seed)");
    }
  }
  return impairment;
}

bool ImpairedPort::Queue::push(const Held& held) {
  if (count == items.size()) return false;
  items[(first + count++) % items.size()] = held;
  return true;
}

void ImpairedPort::Queue::pop() {
  first = (first + 1) % items.size();
  --count;
}

ImpairedPort::ImpairedPort(std::unique_ptr<PacketPort> inner, const LinkImpairment& impairment, BufferPool& pool,
                           ComponentId self)
    : inner_(std::move(inner)), impairment_(impairment), pool_(&pool), self_(self), random_(impairment.seed) {
  for (Direction* direction : {&in_, &out_}) {
    direction->normal.items.resize(kMaxHeld);
    direction->late.items.resize(kMaxHeld);
  }
}

void ImpairedPort::free_frame(const BufferHandle& frame) { (void)pool_->free(self_, frame); }

bool ImpairedPort::admit(Direction& direction, const BufferHandle& frame, std::uint64_t now_ns) {
  if (impairment_.loss > 0 && uniform_(random_) < impairment_.loss) {
    ++dropped_;
    free_frame(frame);
    return false;
  }
  const bool reordered = impairment_.reorder > 0 && uniform_(random_) < impairment_.reorder;
  Queue& queue = reordered ? direction.late : direction.normal;
  const std::uint64_t due = now_ns + impairment_.delay_ns + (reordered ? impairment_.gap_ns : 0);
  if (!queue.push(Held{frame, due})) {
    ++overflowed_;
    free_frame(frame);
    return false;
  }
  return true;
}

bool ImpairedPort::release(Direction& direction, std::uint64_t now_ns, BufferHandle* frame) {
  const Held* normal = direction.normal.front();
  const Held* late = direction.late.front();
  Queue* from = nullptr;
  if (normal != nullptr && normal->due_ns <= now_ns) from = &direction.normal;
  if (late != nullptr && late->due_ns <= now_ns && (from == nullptr || late->due_ns < normal->due_ns)) {
    from = &direction.late;
  }
  if (from == nullptr) return false;
  *frame = from->front()->frame;
  from->pop();
  return true;
}

std::size_t ImpairedPort::receive_burst(std::span<BufferHandle> out) {
  if (!impairment_.rx) return inner_->receive_burst(out);
  const std::uint64_t now = monotonic_ns();
  std::array<BufferHandle, 64> arrived{};
  const std::size_t count = inner_->receive_burst(std::span(arrived).first(std::min(out.size(), arrived.size())));
  for (std::size_t i = 0; i < count; ++i) (void)admit(in_, arrived[i], now);
  std::size_t released = 0;
  while (released < out.size() && release(in_, now, &out[released])) ++released;
  return released;
}

std::size_t ImpairedPort::transmit_burst(std::span<const BufferHandle> frames) {
  if (!impairment_.tx) return inner_->transmit_burst(frames);
  const std::uint64_t now = monotonic_ns();
  for (const BufferHandle& frame : frames) (void)admit(out_, frame, now);
  return frames.size();
}

bool ImpairedPort::service() {
  bool worked = inner_->service();
  if (!impairment_.tx) return worked;
  const std::uint64_t now = monotonic_ns();
  std::array<BufferHandle, 64> due{};
  std::size_t count = 0;
  while (count < due.size() && release(out_, now, &due[count])) ++count;
  if (count == 0) return worked;
  const std::size_t sent = inner_->transmit_burst(std::span(due).first(count));
  for (std::size_t i = sent; i < count; ++i) {
    ++overflowed_;
    free_frame(due[i]);
  }
  return true;
}

std::uint64_t ImpairedPort::next_release_ns() const {
  std::uint64_t next = UINT64_MAX;
  for (const Direction* direction : {&in_, &out_}) {
    for (const Queue* queue : {&direction->normal, &direction->late}) {
      if (const Held* held = queue->front()) next = std::min(next, held->due_ns);
    }
  }
  return next;
}

PortStats ImpairedPort::stats() const {
  PortStats stats = inner_->stats();
  // Frames the emulated link lost count as the device's drops in their direction.
  (impairment_.rx ? stats.rx_dropped : stats.tx_dropped) += dropped_ + overflowed_;
  return stats;
}

std::string ImpairedPort::describe() const {
  char text[160];
  std::snprintf(text, sizeof(text), " impaired (loss %.2f%%, delay %.1f ms, reorder %.0f%%, %s)",
                impairment_.loss * 100, static_cast<double>(impairment_.delay_ns) / 1e6, impairment_.reorder * 100,
                impairment_.rx && impairment_.tx ? "both ways" : impairment_.rx ? "rx" : "tx");
  return inner_->describe() + text;
}

}  // namespace flotilla::drivers
