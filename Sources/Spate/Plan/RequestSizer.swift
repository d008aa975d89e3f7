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
public struct RequestSizer: Sendable, Hashable {
    public static let minimumAutomaticBytes: Int64 = 256 * 1024
    public static let maximumAutomaticBytes: Int64 = 8 * 1024 * 1024
    public static let targetSeconds = 0.5
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

    /// The size of the next request, given the bytes not yet handed out, the connections in use
    /// and the requesting connection's last measured speed (bytes/s), if any.
    public func nextRequestBytes(unassigned: Int64, connections active: Int? = nil, speed: Double? = nil) -> Int64 {
        if let fixedBytes { return fixedBytes }
        var size = baseBytes
        if let speed, speed > 0 {
            let wanted = Int64(min(speed * Self.targetSeconds, Double(Self.maximumAutomaticBytes)))
            size = min(max(wanted / Self.alignment * Self.alignment, Self.minimumAutomaticBytes), Self.maximumAutomaticBytes)
        }
        let tailShare = unassigned / Int64(max(1, active ?? connections))
        return max(Self.minimumAutomaticBytes, min(size, tailShare))
    }

    /// How many connections are worth opening for `fileSize` bytes.
    public func usefulConnections(fileSize: Int64) -> Int {
        let requests = (fileSize + baseBytes - 1) / baseBytes
        return Int(max(1, min(Int64(connections), requests)))
    }
}
