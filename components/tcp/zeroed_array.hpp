// An array whose elements start as all-zero bytes, from calloc: large blocks come straight from
// the kernel's zero pages, which cost no memory until written. So an index sized for the most
// connections a replica may hold costs, while idle, next to nothing; the types that use it make
// all-zero mean "empty".
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

namespace flotilla::tcp {

template <class T>
class ZeroedArray {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  // Throws std::bad_alloc, like the containers beside it, when there is no memory.
  explicit ZeroedArray(std::size_t count) : elements_(static_cast<T*>(std::calloc(count, sizeof(T)))) {
    if (elements_ == nullptr && count > 0) throw std::bad_alloc();
  }

  T& operator[](std::size_t i) { return elements_.get()[i]; }
  const T& operator[](std::size_t i) const { return elements_.get()[i]; }

 private:
  struct Free {
    void operator()(T* elements) const { std::free(elements); }
  };
  std::unique_ptr<T, Free> elements_;
};

}  // namespace flotilla::tcp
