/// Chooses how many bytes the next range request asks for.
///
/// Why requests of bounded size rather than one range per connection: a connection that turns
/// out slow then holds only one request's worth of the file, and the contiguous watermark (for
/// the running digest) stays close to the frontier. Why not tiny requests: each costs a round
/// trip and a header exchange.
///
/// Automatic mode: `size / (connections × 4)`, clamped to 256 KiB … 8 MiB and rounded to 64 KiB;
/// near the end, requests shrink to `unassigned / connections` (not below 256 KiB) so the last
/// requests finish together instead of one connection carrying a large tail alone.
/// A fixed size (`--chunk-size`) is used as given.
public struct RequestSizer: Sendable, Hashable {
    public static let minimumAutomaticBytes: Int64 = 256 * 1024
    public static let maximumAutomaticBytes: Int64 = 8 * 1024 * 1024
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

    /// The size of the next request, given the bytes not yet handed out.
    public func nextRequestBytes(unassigned: Int64) -> Int64 {
        if let fixedBytes { return fixedBytes }
        let tailShare = unassigned / Int64(connections)
        return max(Self.minimumAutomaticBytes, min(baseBytes, tailShare))
    }

    /// How many connections are worth opening for `fileSize` bytes.
    public func usefulConnections(fileSize: Int64) -> Int {
        let requests = (fileSize + baseBytes - 1) / baseBytes
        return Int(max(1, min(Int64(connections), requests)))
    }
}
