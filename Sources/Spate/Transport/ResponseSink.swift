/// Receives one response on the transfer loop's thread.
///
/// Implementations are confined to the loop thread while the transfer runs; the task that
/// started the transfer reads their state only after `CurlLoop.perform` returns, which orders
/// the accesses (the continuation's resume is a synchronisation point).
protocol ResponseSink: AnyObject, Sendable {
    /// The final response head, before any body byte. Return a stop to abort the transfer.
    func accept(_ head: ResponseHead) -> TransferStop?
    /// A piece of the body. Return a stop to abort the transfer.
    func body(_ bytes: UnsafeRawBufferPointer) -> TransferStop?
}

/// Why a sink (or the stall watchdog) ended a transfer early. `TransferOutcome.end` turns it
/// into the transfer's typed end.
enum TransferStop: Sendable, Equatable {
    /// The sink has everything it wants (a probe's head, a range cut short by a steal).
    case enough
    /// Another request made this one unnecessary (`CurlLoop.abandon`).
    case abandoned
    /// The stall watchdog: less than the limit's speed over its window.
    case stalled(StallWatchdog.Limit)
    /// The reply breaks the rules of the request.
    case invalid(InvalidReply)
    /// The reply describes another version of the file.
    case remoteChanged(String)
    /// Writing the bytes failed locally.
    case localFailure(SpateError)
    /// (From `body`.) The rest of the reply is for another sink: the transfer pauses with its
    /// connection, this byte still unread, and its caller gets it in the outcome
    /// (`TransferOutcome.handover`) to go on with `CurlLoop.adopt`. Why: a probe that finds a
    /// server without ranges has the download's stream already under way; cutting it and
    /// asking again costs a request and a connection (and the server's work of starting over).
    case handOver
}

/// What a finished transfer reports back to the task that started it.
struct TransferOutcome: Sendable {
    /// The final response head, if one arrived.
    var head: ResponseHead?
    /// Set when the sink ended the transfer.
    var stop: TransferStop?
    /// libcurl's result code (`CURLE_OK` == 0).
    var curlCode: UInt32
    /// libcurl's explanation for a non-zero `curlCode`.
    var curlMessage: String
    /// Body bytes delivered to the sink.
    var bodyBytes: Int64
    /// From the start of the request to its first response byte (libcurl's
    /// `CURLINFO_STARTTRANSFER_TIME_T`), when a response began.
    var timeToFirstByte: Duration? = nil
    /// From the request sent to its first response byte (`STARTTRANSFER − PRETRANSFER`): the
    /// round trip plus the server's think time, which a connection spends idle per request.
    var replyWait: Duration? = nil
    /// The system's error of a failed connect (`CURLINFO_OS_ERRNO`), for `TransportFailure`.
    var osErrno: Int32 = 0
    /// The paused transfer, when the sink handed the rest of the reply over (`stop ==
    /// .handOver`); dropped without `CurlLoop.adopt`, it ends the transfer.
    var handover: TransferHandover? = nil

}
