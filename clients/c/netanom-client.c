/*
 * netanom-client: streams a capture, packet by packet, to netanom's scoring API (POST /api/v1/analyze) in the
 * capture client's body ({"src_ip", "dst_ip", "packet_size", "protocol", ports, TCP flags, TTL, payload length,
 * ICMP type and code, and the packet's own capture time as "ts_ns"}), and prints each verdict or, with -s, a
 * summary per source. Built from libpcap, libcurl and jansson; see README.md next to it.
 *
 * Usage: netanom-client [-u URL] [-t TOKEN] [-s] [-c COUNT] (-r FILE | -i INTERFACE)
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pcap/pcap.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_URL "http://127.0.0.1:9100/api/v1/analyze"
/* Sources summarised at most (-s); packets of further sources are sent but not summarised. */
#define MAX_SOURCES 65536
/* Attempts of one packet answered 503 (the API's queue is full) before giving up on it. */
#define BUSY_ATTEMPTS 50

/* What the client parsed from one frame. */
struct packet {
    char src[INET6_ADDRSTRLEN];
    char dst[INET6_ADDRSTRLEN];
    int protocol;
    unsigned src_port, dst_port, tcp_flags, ttl;
    unsigned payload_len;
    int icmp_type, icmp_code; /* -1 when not ICMP */
    int has_ports, is_tcp;
};

/* One source's verdicts, for -s. */
struct source {
    char addr[INET6_ADDRSTRLEN];
    unsigned long packets, judged, anomalous;
    long first_anomalous; /* index of the first packet answered is_anomaly, -1 before */
    char kinds[256];      /* kinds of the last answer */
};

static struct source *sources;
static size_t source_count;
/* Open addressing over `sources`: index + 1, 0 for an empty slot; twice as many slots as sources. */
static size_t *slots;
#define SLOTS (2 * MAX_SOURCES)

/* The summary of the source `addr`, added when new; NULL when MAX_SOURCES are summarised already. */
static struct source *source_of(const char *addr) {
    size_t hash = 1469598103934665603ULL;
    for (const char *c = addr; *c; c++) hash = (hash ^ (unsigned char)*c) * 1099511628211ULL;
    for (size_t i = hash % SLOTS;; i = (i + 1) % SLOTS) {
        if (slots[i] == 0) {
            if (source_count == MAX_SOURCES) return NULL;
            struct source *s = &sources[source_count++];
            snprintf(s->addr, sizeof s->addr, "%s", addr);
            s->first_anomalous = -1;
            slots[i] = source_count;
            return s;
        }
        if (strcmp(sources[slots[i] - 1].addr, addr) == 0) return &sources[slots[i] - 1];
    }
}

/* Parses the transport header at `l4` (`len` bytes captured, `ip_payload` bytes per the IP header). */
static void transport(struct packet *p, const u_char *l4, size_t len, unsigned ip_payload) {
    p->payload_len = ip_payload;
    if ((p->protocol == 6 && len >= 20) || (p->protocol == 17 && len >= 8)) {
        p->has_ports = 1;
        p->src_port = (unsigned)(l4[0] << 8 | l4[1]);
        p->dst_port = (unsigned)(l4[2] << 8 | l4[3]);
        if (p->protocol == 6) {
            unsigned header = (unsigned)(l4[12] >> 4) * 4;
            p->is_tcp = 1;
            p->tcp_flags = l4[13];
            p->payload_len = ip_payload > header ? ip_payload - header : 0;
        } else {
            p->payload_len = ip_payload > 8 ? ip_payload - 8 : 0;
        }
    } else if ((p->protocol == 1 || p->protocol == 58) && len >= 4) {
        p->icmp_type = l4[0];
        p->icmp_code = l4[1];
        p->payload_len = ip_payload > 8 ? ip_payload - 8 : 0;
    }
}

/* Parses an IP packet at `ip` (`len` bytes captured); 0 when it is not IPv4 or IPv6. */
static int parse_ip(struct packet *p, const u_char *ip, size_t len) {
    memset(p, 0, sizeof *p);
    p->icmp_type = p->icmp_code = -1;
    if (len >= 20 && ip[0] >> 4 == 4) {
        size_t header = (size_t)(ip[0] & 0x0f) * 4;
        unsigned total = (unsigned)(ip[2] << 8 | ip[3]);
        if (header < 20 || len < header) return 0;
        inet_ntop(AF_INET, ip + 12, p->src, sizeof p->src);
        inet_ntop(AF_INET, ip + 16, p->dst, sizeof p->dst);
        p->ttl = ip[8];
        p->protocol = ip[9];
        transport(p, ip + header, len - header, total > header ? total - (unsigned)header : 0);
        return 1;
    }
    if (len >= 40 && ip[0] >> 4 == 6) {
        size_t offset = 40;
        unsigned payload = (unsigned)(ip[4] << 8 | ip[5]);
        int next = ip[6];
        inet_ntop(AF_INET6, ip + 8, p->src, sizeof p->src);
        inet_ntop(AF_INET6, ip + 24, p->dst, sizeof p->dst);
        p->ttl = ip[7];
        /* Hop-by-hop, routing and destination options headers. */
        while ((next == 0 || next == 43 || next == 60) && len >= offset + 8) {
            unsigned ext = ((unsigned)ip[offset + 1] + 1) * 8;
            next = ip[offset];
            offset += ext;
            payload = payload > ext ? payload - ext : 0;
        }
        if (len < offset) return 0;
        p->protocol = next;
        transport(p, ip + offset, len - offset, payload);
        return 1;
    }
    return 0;
}

/* Finds the IP header of a frame of link type `link`; 0 when there is none. */
static int parse_frame(struct packet *p, int link, const u_char *data, size_t len) {
    size_t offset;
    unsigned type;
    switch (link) {
    case DLT_EN10MB:
        if (len < 14) return 0;
        offset = 14;
        type = (unsigned)(data[12] << 8 | data[13]);
        while ((type == 0x8100 || type == 0x88a8) && len >= offset + 4) {
            type = (unsigned)(data[offset + 2] << 8 | data[offset + 3]);
            offset += 4;
        }
        if (type != 0x0800 && type != 0x86dd) return 0;
        break;
    case DLT_LINUX_SLL:
        if (len < 16) return 0;
        offset = 16;
        break;
    case DLT_RAW:
    case 101: /* LINKTYPE_RAW */
        offset = 0;
        break;
    default:
        return 0;
    }
    return parse_ip(p, data + offset, len - offset);
}

/* The HTTP answer, collected. */
struct buffer {
    char *data;
    size_t len;
};

static size_t collect(char *ptr, size_t size, size_t n, void *userdata) {
    struct buffer *b = userdata;
    size_t add = size * n;
    char *grown = realloc(b->data, b->len + add + 1);
    if (!grown) return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, add);
    b->len += add;
    b->data[b->len] = '\0';
    return add;
}

/* The body of one packet at `ts_ns` whose frame was `wire_len` bytes long; NULL when out of memory. */
static char *body_of(const struct packet *p, long long ts_ns, unsigned wire_len) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:i, s:I, s:i, s:I}", "src_ip", p->src, "dst_ip", p->dst, "packet_size",
                          (json_int_t)wire_len, "protocol", p->protocol, "ts_ns", (json_int_t)ts_ns, "ttl", (int)p->ttl,
                          "payload_len", (json_int_t)p->payload_len);
    if (!o) return NULL;
    if (p->has_ports) {
        json_object_set_new(o, "src_port", json_integer(p->src_port));
        json_object_set_new(o, "dst_port", json_integer(p->dst_port));
    }
    if (p->is_tcp) json_object_set_new(o, "tcp_flags", json_integer(p->tcp_flags));
    if (p->icmp_type >= 0) {
        json_object_set_new(o, "icmp_type", json_integer(p->icmp_type));
        json_object_set_new(o, "icmp_code", json_integer(p->icmp_code));
    }
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

/* The names of the kinds in an answer's "kinds", comma-separated, into `out`. */
static void kinds_of(json_t *answer, char *out, size_t size) {
    json_t *kinds = json_object_get(answer, "kinds");
    size_t i, used = 0;
    json_t *k;
    out[0] = '\0';
    json_array_foreach(kinds, i, k) {
        const char *name = json_string_value(json_object_get(k, "kind"));
        if (!name) continue;
        int n = snprintf(out + used, size - used, "%s%s", used ? "," : "", name);
        if (n < 0 || (size_t)n >= size - used) break;
        used += (size_t)n;
    }
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [-u URL] [-t TOKEN] [-s] [-c COUNT] (-r FILE | -i INTERFACE)\n"
            "  -u URL        the scoring API (default %s)\n"
            "  -t TOKEN      bearer token (default: $NETANOM_API_TOKEN, none when unset)\n"
            "  -s            print a summary per source at the end instead of a line per packet\n"
            "  -c COUNT      stop after COUNT packets sent\n"
            "  -r FILE       read a capture file (pcap or pcapng)\n"
            "  -i INTERFACE  capture live on INTERFACE (needs the capture privilege)\n",
            argv0, DEFAULT_URL);
}

int main(int argc, char **argv) {
    const char *url = DEFAULT_URL, *token = getenv("NETANOM_API_TOKEN"), *file = NULL, *iface = NULL;
    int summary = 0, opt;
    long max_count = -1;
    while ((opt = getopt(argc, argv, "u:t:sc:r:i:h")) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 't': token = optarg; break;
        case 's': summary = 1; break;
        case 'c': max_count = strtol(optarg, NULL, 10); break;
        case 'r': file = optarg; break;
        case 'i': iface = optarg; break;
        default: usage(argv[0]); return opt == 'h' ? 0 : 2;
        }
    }
    if ((file == NULL) == (iface == NULL)) {
        usage(argv[0]);
        return 2;
    }
    char errbuf[PCAP_ERRBUF_SIZE] = "";
    pcap_t *pcap = file ? pcap_open_offline_with_tstamp_precision(file, PCAP_TSTAMP_PRECISION_NANO, errbuf)
                        : pcap_open_live(iface, 262144, 0, 100, errbuf);
    if (!pcap) {
        fprintf(stderr, "netanom-client: cannot open %s: %s\n", file ? file : iface, errbuf);
        return 1;
    }
    int nano = file || pcap_get_tstamp_precision(pcap) == PCAP_TSTAMP_PRECISION_NANO;
    int link = pcap_datalink(pcap);
    sources = calloc(MAX_SOURCES, sizeof *sources);
    slots = calloc(SLOTS, sizeof *slots);
    if (!sources || !slots || curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "netanom-client: out of memory\n");
        return 1;
    }
    CURL *curl = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[1024];
    if (token && *token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        headers = curl_slist_append(headers, auth);
    }
    if (!curl || !headers) {
        fprintf(stderr, "netanom-client: cannot set up libcurl\n");
        return 1;
    }
    struct buffer answer = {NULL, 0};
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 30L);

    unsigned long sent = 0, skipped = 0, failed = 0;
    struct pcap_pkthdr *h;
    const u_char *data;
    int r;
    while ((max_count < 0 || (long)sent < max_count) && (r = pcap_next_ex(pcap, &h, &data)) >= 0) {
        struct packet p;
        if (r == 0) continue; /* live capture: timeout without a packet */
        if (!parse_frame(&p, link, data, h->caplen)) {
            skipped++;
            continue;
        }
        long long ts_ns = (long long)h->ts.tv_sec * 1000000000LL + (long long)h->ts.tv_usec * (nano ? 1 : 1000);
        char *body = body_of(&p, ts_ns, h->len);
        if (!body) {
            fprintf(stderr, "netanom-client: out of memory\n");
            return 1;
        }
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        long status = 0;
        CURLcode rc = CURLE_OK;
        for (int attempt = 0; attempt < BUSY_ATTEMPTS; attempt++) {
            answer.len = 0;
            rc = curl_easy_perform(curl);
            status = 0;
            if (rc == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
            if (status != 503) break;
            usleep(100000); /* the queue is full: the API asks to retry */
        }
        sent++;
        json_t *v = (rc == CURLE_OK && answer.data) ? json_loadb(answer.data, answer.len, 0, NULL) : NULL;
        if (status != 200 || !json_is_object(v)) {
            failed++;
            const char *error = json_string_value(json_object_get(v, "error"));
            fprintf(stderr, "netanom-client: packet %lu from %s: %s %ld: %s\n", sent, p.src,
                    rc == CURLE_OK ? "HTTP" : curl_easy_strerror(rc), status,
                    error ? error : (answer.data && answer.len ? answer.data : "(no answer)"));
        } else {
            int anomaly = json_is_true(json_object_get(v, "is_anomaly"));
            int judged = json_is_true(json_object_get(v, "judged"));
            double score = json_real_value(json_object_get(v, "anomaly_score"));
            if (json_is_integer(json_object_get(v, "anomaly_score")))
                score = (double)json_integer_value(json_object_get(v, "anomaly_score"));
            char kinds[256];
            kinds_of(v, kinds, sizeof kinds);
            if (summary) {
                struct source *s = source_of(p.src);
                if (s) {
                    s->packets++;
                    s->judged += (unsigned long)judged;
                    s->anomalous += (unsigned long)anomaly;
                    if (anomaly && s->first_anomalous < 0) s->first_anomalous = (long)s->packets;
                    snprintf(s->kinds, sizeof s->kinds, "%s", kinds);
                }
            } else {
                printf("%lld.%09lld %s > %s proto %d size %u score %.3f anomaly %s judged %s kinds %s\n",
                       ts_ns / 1000000000LL, ts_ns % 1000000000LL, p.src, p.dst, p.protocol, h->len, score,
                       anomaly ? "yes" : "no", judged ? "yes" : "no", kinds[0] ? kinds : "-");
            }
        }
        json_decref(v);
        free(body);
    }
    if (summary) {
        printf("source\tpackets\tjudged\tanomalous\tfirst_anomalous\tkinds\n");
        for (size_t i = 0; i < source_count; i++) {
            const struct source *s = &sources[i];
            printf("%s\t%lu\t%lu\t%lu\t%ld\t%s\n", s->addr, s->packets, s->judged, s->anomalous, s->first_anomalous,
                   s->kinds[0] ? s->kinds : "-");
        }
    }
    fprintf(stderr, "netanom-client: %lu packets sent, %lu failed, %lu frames skipped (not IP)\n", sent, failed,
            skipped);
    free(answer.data);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    pcap_close(pcap);
    free(sources);
    free(slots);
    return failed ? 1 : 0;
}
