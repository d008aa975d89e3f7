/// Chooses how many bytes the next range request asks for.
///
/// Why requests of bounded size rather than one range per connection: a connection that turns
/// out slow then holds only one request's worth of the file, and the contiguous watermark (for
/// the running digest) stays close to the frontier. Why not tiny requests: each costs a round
/// trip and a header exchange.
///
/// Automatic mode: the first requests ask for `size / (connections × 4)`, clamped to
/// 256 KiB … 8 MiB and rounded to 64 KiB; once a connection's speed is known, its requests last
/// about `targetSeconds` at that speed (a slow connection holds little, a fast one pays fewer
/// round trips), within the same bounds. Near the end, requests shrink to
/// `unassigned / connections` (not below 256 KiB) so the last requests finish together instead
/// of one connection carrying a large tail alone. A fixed size (`--chunk-size`) is used as given.
///
/// **Round trips.** HTTP/1.1 without pipelining (libcurl has none) leaves a kept connection
/// idle between the end of one reply and the first byte of the next: one round trip plus the
/// server's think time (`replyWait`, measured per request). Loopback hides it; at 80 ms and
/// 10 MiB/s per connection, requests of 0.5 s lost 14 % of every connection's time. So a
/// request lasts at least `roundTripsPerRequest` reply waits (the tax is then at most 2.5 %),
/// without the 8 MiB ceiling; before its speed is known, a connection on such a link takes an
/// equal share of what no one holds (one long request per connection, as axel does), and work
/// stealing splits the long requests when connections finish unevenly. On a short round trip
/// (a LAN, loopback) nothing changes: 40 reply waits of under 12.5 ms are under `targetSeconds`.
public struct RequestSizer: Sendable, Hashable {
    public static let minimumAutomaticBytes: Int64 = 256 * 1024
    public static let maximumAutomaticBytes: Int64 = 8 * 1024 * 1024
    public static let targetSeconds = 0.5
    /// A request lasts at least this many reply waits (see "Round trips" above).
    public static let roundTripsPerRequest = 40.0
    static let alignment: Int64 = 64 * 1024

    public let fixedBytes: Int64?
    public let baseBytes: Int64
    public let connections: Int

    public init(fileSize: Int64, connections: Int, fixedBytes: Int64?) {
        precondition(connections > 0)
        self.connections = connections
        self.fixedBytes = fixedBytes
        if let fixedBytes {
            precondition(fixedBytes > 0)
            baseBytes = fixedBytes
        } else {
            let share = fileSize / Int64(connections * 4)
            let clamped = min(max(share, Self.minimumAutomaticBytes), Self.maximumAutomaticBytes)
            baseBytes = max(Self.alignment, clamped / Self.alignment * Self.alignment)
        }
    }

    /// The size of the next request.
    /// - Parameters:
    ///   - unassigned: the bytes not yet handed out.
    ///   - active: the connections in use (near the end, what is left is shared among them).
    ///   - speed: the requesting connection's last measured speed (bytes/s), if any.
    ///   - replyWait: the typical wait between a request and its first byte (seconds), if known.
    ///   - outstanding: the bytes running requests still have to receive; with `unassigned`,
    ///     the work left, of which each of `allowed` connections should carry an equal share
    ///     when round trips are dear.
    public func nextRequestBytes(unassigned: Int64, connections active: Int? = nil, speed: Double? = nil,
                                 replyWait: Double? = nil, outstanding: Int64 = 0, allowed: Int? = nil) -> Int64 {
        if let fixedBytes { return fixedBytes }
        let seconds = max(Self.targetSeconds, (replyWait ?? 0) * Self.roundTripsPerRequest)
        guard seconds > Self.targetSeconds else {
            var size = baseBytes
            if let speed, speed > 0 {
                let wanted = Int64(min(speed * seconds, Double(Self.maximumAutomaticBytes)))
                size = min(max(wanted / Self.alignment * Self.alignment, Self.minimumAutomaticBytes), Self.maximumAutomaticBytes)
            }
            let tailShare = unassigned / Int64(max(1, active ?? connections))
            return max(Self.minimumAutomaticBytes, min(size, tailShare))
        }
        // Round trips are dear: a share of the work left, so the connections finish together
        // (at the start, one long request each); once the speed is known, at least `seconds`
        // of transfer. A request that would leave less than another one behind takes the whole
        // share: a last small request would pay a round trip for little.
        let share = min(unassigned, (unassigned + max(0, outstanding)) / Int64(max(1, allowed ?? connections)))
        var size = share
        if let speed, speed > 0 {
            let wanted = Int64(min(speed * seconds, Double(ByteSize.largest)))
            if 2 * wanted <= share { size = max(Self.alignment, wanted / Self.alignment * Self.alignment) }
        }
        return max(Self.minimumAutomaticBytes, size)
    }

    /// How many connections are worth opening for `fileSize` bytes.
    public func usefulConnections(fileSize: Int64) -> Int {
        let requests = (fileSize + baseBytes - 1) / baseBytes
        return Int(max(1, min(Int64(connections), requests)))
    }
}
