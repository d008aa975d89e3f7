import NIOCore
import NIOHTTP1
import SpateTestContent
import Synchronization

private let connectionCounter = Atomic<Int>(0)

/// Serves the requests of one connection, one at a time, streaming bodies with backpressure
/// (a body is generated 256 KiB at a time, only while the socket is writable) and applying the
/// plan's faults. Responses are written as raw bytes so a plan controls every header.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    static let chunkBytes = 256 * 1024
    static let throttleTick: TimeAmount = .milliseconds(10)
    static let tickSeconds = Double(throttleTick.nanoseconds) / 1e9

    private struct BodyStream {
        var plan: ResponsePlan
        var sent: Int64 = 0
        var total: Int64
        var closeWhenDone: Bool
        var stalled = false
        var tickScheduled = false
    }

    /// The connection's pacing: a token bucket filled at the reply's `bytesPerSecond` and at
    /// most two ticks deep (a late tick loses nothing), kept across the replies of the
    /// connection.
    ///
    /// Why per connection and by elapsed time: a cap on the connection (nginx's `limit_rate`
    /// with every byte paced, a per-client limit) sends a new reply's first bytes at once if the
    /// connection has been idle, and never more than the rate over time. Restarting an empty
    /// budget for every reply and waiting a whole tick for its first bytes added 10 ms of
    /// latency to every request on top of the cap.
    private var paceCredit: Double = 0
    private var paceUpdated: NIODeadline?

    private let core: TestServerCoreBox
    private let localHost: String
    private let connectionID = connectionCounter.add(1, ordering: .relaxed).newValue
    private var requestsOnConnection = 0
    private var head: HTTPRequestHead?
    private var waiting: [HTTPRequestHead] = []
    private var stream: BodyStream?
    private var active = true
    /// A reply was counted as in progress and has not ended yet.
    private var replyInProgress = false
    /// The reply in progress: its request number, content start and bytes sent so far.
    private var servedIndex = 0
    private var servedStart: Int64?
    private var servedCount: Int64 = 0

    init(core: TestServerCoreBox, localHost: String) {
        self.core = core
        self.localHost = localHost
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body:
            break
        case .end:
            guard let h = head else { return }
            head = nil
            if stream != nil { waiting.append(h) } else { respond(context: context, to: h) }
        }
    }

    /// Whether this connection was counted open (the server object existed when it opened).
    private var counted = false

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        stream = nil
        endReply()
        if counted { core.server.withLock { $0 }?.connectionClosed(host: localHost) }
        counted = false
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    private func respond(context: ChannelHandlerContext, to request: HTTPRequestHead) {
        guard let server = core.server.withLock({ $0 }) else {
            context.close(promise: nil)
            return
        }
        requestsOnConnection += 1
        let n = requestsOnConnection
        if !counted {
            server.connectionOpened(host: localHost)
            counted = true
        }
        let info = server.record(host: localHost) { counts in
            RequestInfo(index: counts.index, connectionRequestIndex: n, connectionID: connectionID, host: localHost,
                        method: request.method.rawValue, uri: request.uri,
                        headers: request.headers.map { ($0.name, $0.value) }, concurrentRequests: counts.concurrent,
                        concurrentRequestsOnHost: counts.concurrentOnHost, openConnectionsOnHost: counts.openOnHost)
        }
        replyInProgress = true
        servedIndex = info.index
        servedCount = 0
        let plan = server.plan(for: info)
        if case .content(_, let start, _) = plan.body { servedStart = start } else { servedStart = nil }

        if let delay = plan.firstByteDelay, delay > .zero {
            // The reply starts one round trip after the request: the connection stays busy
            // (`stream` set) so a pipelined request waits, as on a real link.
            stream = BodyStream(plan: plan, total: 0, closeWhenDone: false, stalled: true)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let (seconds, attoseconds) = delay.components
            context.eventLoop.scheduleTask(in: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)) {
                let (handler, context) = bound.value
                guard handler.active else { return }
                handler.stream = nil
                handler.sendReply(context: context, plan: plan, to: request)
            }
            return
        }
        sendReply(context: context, plan: plan, to: request)
    }

    private func sendReply(context: ChannelHandlerContext, plan: ResponsePlan, to request: HTTPRequestHead) {
        var text = "HTTP/1.1 \(plan.status) \(plan.reason)\r\n"
        for (name, value) in plan.headers { text += "\(name): \(value)\r\n" }
        text += "\r\n"
        if let raw = plan.rawHead { text = raw }
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        context.write(wrapOutboundOut(buffer), promise: nil)

        let clientWantsClose = request.headers["connection"].contains { $0.lowercased() == "close" }
        let total = request.method == .HEAD ? 0 : plan.body.count
        stream = BodyStream(plan: plan, total: total, closeWhenDone: plan.closeAfterResponse || clientWantsClose)
        pump(context: context)
    }

    /// Sends as much of the body as the socket, the faults and the throttle allow.
    private func pump(context: ChannelHandlerContext) {
        guard active, var s = stream, !s.stalled else { return }
        while context.channel.isWritable {
            if s.sent >= s.total {
                finishResponse(context: context, closing: s.closeWhenDone)
                return
            }
            if let stall = s.plan.stallAfterBodyBytes, s.sent >= stall {
                s.stalled = true
                stream = s
                context.flush()
                return
            }
            if let close = s.plan.closeAfterBodyBytes, s.sent >= close {
                stream = nil
                endReply()
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                    bound.value.close(promise: nil)
                }
                return
            }
            var n = min(Int64(Self.chunkBytes), s.total - s.sent)
            if let stall = s.plan.stallAfterBodyBytes { n = min(n, stall - s.sent) }
            if let close = s.plan.closeAfterBodyBytes { n = min(n, close - s.sent) }
            if let rate = s.plan.bytesPerSecond {
                refill(rate: rate)
                // Send in pieces of at least a quarter tick's worth (or what is left): refilled
                // on every pass, a few bytes would always be due and the loop would never yield
                // to the other connections.
                if paceCredit < Double(min(n, max(1, Int64(Double(rate) * Self.tickSeconds / 4)))) {
                    scheduleTick(context: context, stream: &s)
                    stream = s
                    context.flush()
                    return
                }
                n = min(n, Int64(paceCredit))
                paceCredit -= Double(n)
            }
            let buffer = makeBody(context: context, plan: s.plan, offset: s.sent, count: Int(n))
            context.write(wrapOutboundOut(buffer), promise: nil)
            s.sent += n
            servedCount += n
        }
        stream = s
        context.flush()
    }

    /// Adds what `rate` earned since the last refill, up to one tick's worth.
    private func refill(rate: Int) {
        let now = NIODeadline.now()
        let elapsed = paceUpdated.map { Double((now - $0).nanoseconds) / 1e9 } ?? 0
        paceUpdated = now
        let depth = Double(rate) * 2 * Self.tickSeconds
        paceCredit = min(depth, paceCredit + Double(rate) * max(0, elapsed))
    }

    private func scheduleTick(context: ChannelHandlerContext, stream s: inout BodyStream) {
        guard !s.tickScheduled, s.plan.bytesPerSecond != nil else { return }
        s.tickScheduled = true
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: Self.throttleTick) {
            let (handler, context) = bound.value
            guard handler.stream != nil else { return }
            handler.stream!.tickScheduled = false
            handler.pump(context: context)
        }
    }

    private func makeBody(context: ChannelHandlerContext, plan: ResponsePlan, offset: Int64, count: Int) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: count)
        switch plan.body {
        case .empty:
            break
        case .bytes(let bytes):
            buffer.writeBytes(bytes[Int(offset)..<Int(offset) + count])
        case .content(let content, let start, _):
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
                content.fill(UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), from: start + offset)
                return count
            }
        }
        return buffer
    }

    private func endReply() {
        guard replyInProgress else { return }
        replyInProgress = false
        let served = servedStart.map { TestServer.ServedBytes(requestIndex: servedIndex, start: $0, count: servedCount) }
        core.server.withLock { $0 }?.replyEnded(host: localHost, served)
    }

    private func finishResponse(context: ChannelHandlerContext, closing: Bool) {
        stream = nil
        endReply()
        context.flush()
        if closing {
            context.close(promise: nil)
            return
        }
        if !waiting.isEmpty {
            respond(context: context, to: waiting.removeFirst())
        }
    }
}
