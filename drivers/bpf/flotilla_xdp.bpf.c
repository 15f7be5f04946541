/* The af_xdp driver's XDP program. The interface belongs to Flotilla: every frame goes to the
 * driver's AF_XDP socket on its receive queue, except frames that match one of the packet filter's
 * stateless `block in` rules, which are dropped here, before they cost a copy, and counted. With no
 * socket bound to the queue (the driver is restarting) the frame is dropped too, never passed to
 * the kernel's own stack. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdp_block_rule.h"

/* Queue index -> AF_XDP socket. Filled by user space (xsk_socket__update_xskmap). */
struct {
  __uint(type, BPF_MAP_TYPE_XSKMAP);
  __uint(max_entries, 64);
  __type(key, __u32);
  __type(value, __u32);
} xsks_map SEC(".maps");

/* The block rules, one per slot; empty slots have in_use == 0. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, FLOTILLA_XDP_MAX_RULES);
  __type(key, __u32);
  __type(value, struct flotilla_xdp_block_rule);
} block_rules SEC(".maps");

/* Frames dropped by a rule. Per CPU, so counting needs no atomic; user space sums the CPUs. */
struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} early_drops SEC(".maps");

/* What the rules look at, taken from the headers once. */
struct flow_fields {
  __u32 src_addr; /* network order */
  __u32 dst_addr;
  __u16 src_port; /* host order; valid only when has_ports */
  __u16 dst_port;
  __u8 protocol;
  __u8 has_ports;
};

static __always_inline int port_range_is_any(__u16 min, __u16 max) {
  return min == 0 && max == 0xffff;
}

static __always_inline int rule_matches(const struct flotilla_xdp_block_rule *rule,
                                        const struct flow_fields *flow) {
  if (!rule->in_use) return 0;
  if ((flow->src_addr & rule->src_mask) != (rule->src_addr & rule->src_mask)) return 0;
  if ((flow->dst_addr & rule->dst_mask) != (rule->dst_addr & rule->dst_mask)) return 0;
  if (rule->protocol != 0 && rule->protocol != flow->protocol) return 0;
  if (port_range_is_any(rule->src_port_min, rule->src_port_max) &&
      port_range_is_any(rule->dst_port_min, rule->dst_port_max)) {
    return 1;
  }
  /* A rule that names ports can only match a packet that carries them: TCP or UDP, and not a
   * later fragment. */
  if (!flow->has_ports) return 0;
  return flow->src_port >= rule->src_port_min && flow->src_port <= rule->src_port_max &&
         flow->dst_port >= rule->dst_port_min && flow->dst_port <= rule->dst_port_max;
}

/* Reads the IPv4 fields; returns 0 when the frame is not IPv4 or too short to judge (user space
 * validates and counts those; the rules only block what they can see). */
static __always_inline int parse_ipv4(void *data, void *data_end, struct flow_fields *flow) {
  struct ethhdr *eth = data;
  if ((void *)(eth + 1) > data_end) return 0;
  if (eth->h_proto != bpf_htons(ETH_P_IP)) return 0;

  struct iphdr *ip = (void *)(eth + 1);
  if ((void *)(ip + 1) > data_end) return 0;
  if (ip->version != 4 || ip->ihl < 5) return 0;
  const __u32 ip_header_length = ip->ihl * 4;
  if ((void *)ip + ip_header_length > data_end) return 0;

  flow->src_addr = ip->saddr;
  flow->dst_addr = ip->daddr;
  flow->protocol = ip->protocol;
  flow->has_ports = 0;

  /* Only the first fragment (offset 0) holds the transport header. */
  if ((ip->frag_off & bpf_htons(0x1fff)) != 0) return 1;
  void *transport = (void *)ip + ip_header_length;
  if (ip->protocol == IPPROTO_UDP) {
    struct udphdr *udp = transport;
    if ((void *)(udp + 1) > data_end) return 1;
    flow->src_port = bpf_ntohs(udp->source);
    flow->dst_port = bpf_ntohs(udp->dest);
    flow->has_ports = 1;
  } else if (ip->protocol == IPPROTO_TCP) {
    /* The ports are the first four bytes; a first fragment may be cut short after them. */
    struct udphdr *ports = transport;
    if ((void *)(ports + 1) > data_end) return 1;
    flow->src_port = bpf_ntohs(ports->source);
    flow->dst_port = bpf_ntohs(ports->dest);
    flow->has_ports = 1;
  }
  return 1;
}

SEC("xdp")
int flotilla_xdp(struct xdp_md *ctx) {
  void *data = (void *)(long)ctx->data;
  void *data_end = (void *)(long)ctx->data_end;
  struct flow_fields flow = {};

  if (parse_ipv4(data, data_end, &flow)) {
    for (__u32 slot = 0; slot < FLOTILLA_XDP_MAX_RULES; slot++) {
      __u32 key = slot;
      const struct flotilla_xdp_block_rule *rule = bpf_map_lookup_elem(&block_rules, &key);
      if (!rule) break;
      if (rule_matches(rule, &flow)) {
        __u32 zero = 0;
        __u64 *drops = bpf_map_lookup_elem(&early_drops, &zero);
        if (drops) *drops += 1;
        return XDP_DROP;
      }
    }
  }
  return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
