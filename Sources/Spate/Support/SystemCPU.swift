import Glibc

/// Whole-machine CPU time from /proc/stat: whether the machine has spare cycles.
///
/// Why the tuner asks: when every core is busy (loopback, a fast LAN with a slow CPU), more
/// connections cannot raise the throughput and only add overhead, so probing upwards is skipped.
struct SystemCPU {
    /// Cumulative jiffies: busy (everything but idle and iowait) and total.
    struct Sample {
        var busy: UInt64
        var total: UInt64
    }

    static func sample() -> Sample? {
        let fd = open("/proc/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        // "cpu  user nice system idle iowait irq softirq steal ..."
        let line = buffer[0..<n].split(separator: UInt8(ascii: "\n")).first ?? []
        let fields = line.split(separator: UInt8(ascii: " ")).dropFirst().compactMap { UInt64(String(decoding: $0, as: UTF8.self)) }
        guard fields.count >= 5 else { return nil }
        let total = fields.prefix(8).reduce(0, +)
        let idle = fields[3] + fields[4]
        return Sample(busy: total - idle, total: total)
    }

    /// The busy share of the machine between two samples (0...1), nil without a difference.
    static func busyFraction(from a: Sample, to b: Sample) -> Double? {
        guard b.total > a.total else { return nil }
        return Double(b.busy - a.busy) / Double(b.total - a.total)
    }
}
