/* One stateless `block in` rule of the packet filter, as the driver's XDP program reads it from its
 * rules map. Shared, byte for byte, by the BPF program (C, built by clang) and by user space (C++):
 * so plain C, fixed-width types, no padding holes. Addresses and ports are in network byte order, as
 * they sit in the packet, so the XDP program compares without swapping. A zero mask or protocol 0
 * matches anything; a port range [min, max] in host order (converted by the program) applies only
 * to TCP and UDP. */
#ifndef FLOTILLA_XDP_BLOCK_RULE_H
#define FLOTILLA_XDP_BLOCK_RULE_H

#include <linux/types.h>

#define FLOTILLA_XDP_MAX_RULES 32

struct flotilla_xdp_block_rule {
  __u32 in_use;       /* 0: empty slot, skipped */
  __u32 src_addr;     /* network order */
  __u32 src_mask;     /* network order; 0 = any */
  __u32 dst_addr;
  __u32 dst_mask;
  __u16 src_port_min; /* host order; min 0 and max 65535 = any */
  __u16 src_port_max;
  __u16 dst_port_min;
  __u16 dst_port_max;
  __u8 protocol;      /* IPPROTO_*; 0 = any */
  __u8 reserved[3];
};

#endif
