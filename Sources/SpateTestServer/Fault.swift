import Spate
import SpateTestContent
import Synchronization

/// A misbehaviour the test server can inject into one reply (RELIABILITY.md A and D).
public enum Fault: Sendable, Hashable, CustomStringConvertible {
    /// Send the head and this many body bytes, then close the connection. With a 206 this is
    /// "fewer bytes than declared, then close".
    case closeAfter(bytes: Int64)
    /// Send the head and this many body bytes, then go silent with the connection open.
    case stallAfter(bytes: Int64)
    /// Answer with this status (503, 429, 500, 202, 403, ...) and an optional Retry-After.
    case status(Int, retryAfter: String?)
    /// Answer a Range request with 200 and the whole body.
    case fullBodyForRange
    /// Answer with a 206 for other bytes than asked (shifted by this many), consistently labelled.
    case shiftedRange(by: Int64)
    /// Answer with a 206 for the first this many bytes of the range only, consistently labelled
    /// (servers that cap the bytes of one reply).
    case cappedRange(at: Int64)
    /// Claim `Content-Encoding: gzip` on a range.
    case gzipEncoding
    /// Answer a single range with multipart/byteranges.
    case multipart
    /// Pace the body at this rate.
    case slow(bytesPerSecond: Int)

    public var description: String {
        switch self {
        case .closeAfter(let n): "close after \(n) bytes"
        case .stallAfter(let n): "stall after \(n) bytes"
        case .status(let code, let retryAfter): "status \(code)" + (retryAfter.map { " Retry-After: \($0)" } ?? "")
        case .fullBodyForRange: "200 with the full body"
        case .shiftedRange(let n): "206 for a range shifted by \(n)"
        case .cappedRange(let n): "206 for the first \(n) bytes of the range"
        case .gzipEncoding: "Content-Encoding: gzip"
        case .multipart: "multipart/byteranges"
        case .slow(let rate): "slow (\(rate) B/s)"
        }
    }

    /// The reply to `request` with this fault applied to the standard reply for `file`.
    public func apply(to request: RequestInfo, file: TestServer.File) -> ResponsePlan {
        var plan = TestServer.standardPlan(for: request, file: file)
        let size = file.content.size
        switch self {
        case .closeAfter(let n):
            plan.closeAfterBodyBytes = min(n, max(0, plan.body.count - 1))
        case .stallAfter(let n):
            plan.stallAfterBodyBytes = min(n, max(0, plan.body.count - 1))
        case .status(let code, let retryAfter):
            plan = .text(code, "injected \(code)\n")
            if let retryAfter { plan.setHeader("Retry-After", retryAfter) }
        case .fullBodyForRange:
            plan = TestServer.standardPlan(for: RequestInfo(copying: request, withoutHeader: "range"), file: file)
        case .shiftedRange(let shift):
            if case .content(let content, let start, let end) = plan.body, plan.status == 206 {
                let s = min(max(0, start + shift), size - (end - start))
                plan.body = .content(content, start: s, end: s + (end - start))
                plan.setHeader("Content-Range", "bytes \(s)-\(s + (end - start) - 1)/\(size)")
            }
        case .cappedRange(let cap):
            if case .content(let content, let start, let end) = plan.body, plan.status == 206, end - start > cap {
                plan.body = .content(content, start: start, end: start + cap)
                plan.setHeader("Content-Range", "bytes \(start)-\(start + cap - 1)/\(size)")
                plan.setHeader("Content-Length", String(cap))
            }
        case .gzipEncoding:
            plan.setHeader("Content-Encoding", "gzip")
        case .multipart:
            if case .content(let content, let start, let end) = plan.body, plan.status == 206 {
                let boundary = "SPATE_BOUNDARY"
                var bytes = Array("--\(boundary)\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes \(start)-\(end - 1)/\(size)\r\n\r\n".utf8)
                bytes += content.bytes(start, end)
                bytes += Array("\r\n--\(boundary)--\r\n".utf8)
                plan.body = .bytes(bytes)
                plan.setHeader("Content-Range", nil)
                plan.setHeader("Content-Type", "multipart/byteranges; boundary=\(boundary)")
                plan.setHeader("Content-Length", String(bytes.count))
            }
        case .slow(let rate):
            plan.bytesPerSecond = rate
        }
        return plan
    }
}

/// Injects faults into a seeded share of requests, for chaos tests: the n-th request that
/// arrives (after `skip`) gets the n-th draw of a SplitMix64 sequence seeded with `seed`.
public final class FaultSchedule: Sendable {
    public let seed: UInt64
    public let rate: Double
    public let faults: [Fault]
    private let state: Mutex<(rng: SplitMix64, injected: [Fault])>

    /// - Parameters:
    ///   - rate: the share of requests that get a fault (0...1).
    ///   - faults: the faults to draw from, uniformly.
    public init(seed: UInt64, rate: Double, faults: [Fault]) {
        self.seed = seed
        self.rate = rate
        self.faults = faults
        state = Mutex((SplitMix64(seed: seed), []))
    }

    /// Faults injected so far, in order.
    public var injected: [Fault] { state.withLock { $0.injected } }

    /// The next draw: a fault, or nil for a normal reply.
    public func next() -> Fault? {
        state.withLock { s in
            let roll = s.rng.nextUnitInterval()
            let pick = Int(s.rng.next() % UInt64(max(1, faults.count)))
            guard roll < rate, !faults.isEmpty else { return nil }
            s.injected.append(faults[pick])
            return faults[pick]
        }
    }

    /// A server hook: range requests for files the server knows get the scheduled faults; the
    /// probe (`bytes=0-0`) is left alone so every schedule exercises the transfers.
    public func hook(for server: TestServer) -> TestServer.Hook {
        { [self] request in
            guard let range = request.header("range"), range != "bytes=0-0",
                  let file = server.file(at: request.path, query: request.query), let fault = next() else { return nil }
            return fault.apply(to: request, file: file)
        }
    }
}

extension RequestInfo {
    /// The same request without one header (to compute what a server ignoring it would send).
    public init(copying other: RequestInfo, withoutHeader name: String) {
        self.init(index: other.index, connectionRequestIndex: other.connectionRequestIndex,
                  connectionID: other.connectionID, host: other.host, method: other.method, uri: other.uri,
                  headers: other.headers.filter { $0.name.lowercased() != name.lowercased() },
                  concurrentRequests: other.concurrentRequests, concurrentRequestsOnHost: other.concurrentRequestsOnHost,
                  openConnectionsOnHost: other.openConnectionsOnHost, arrival: other.arrival)
    }
}
