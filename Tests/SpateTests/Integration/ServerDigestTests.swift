import Foundation
@testable import Spate
import SpateTestContent
import SpateTestServer
import Testing

/// Whole-file digests servers publish (issue 14, item 3): parsed from the reply head, verified
/// while downloading; a mismatch is exit 5 and no file.
@Suite("Server digests", .timeLimit(.minutes(5)))
struct ServerDigestTests {
    static let content = GeneratedContent(seed: 9701, size: 3 << 20)

    static func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    func head(_ fields: [(String, String)], status: Int = 206) -> ResponseHead {
        ResponseHead(status: status, fields: fields.map { (name: $0.0.lowercased(), value: $0.1) })
    }

    @Test func eachHeaderKindIsRead() {
        let sha256 = Self.content.digest(.sha256), md5 = Self.content.digest(.md5), sha512 = Self.content.digest(.sha512)
        let cases: [([(String, String)], Bool, String?, DigestAlgorithm?)] = [
            ([("Repr-Digest", "sha-512=:\(Self.base64(sha512)):, sha-256=:\(Self.base64(sha256)):")], false, "Repr-Digest", .sha256),
            ([("x-amz-checksum-sha256", Self.base64(sha256)), ("x-amz-checksum-type", "FULL_OBJECT")], false, "x-amz-checksum-sha256", .sha256),
            ([("x-goog-hash", "crc32c=n03x6A==,md5=\(Self.base64(md5))")], false, "x-goog-hash", .md5),
            ([("X-Linked-Etag", "\"\(Hex.encode(sha256))\"")], false, "X-Linked-Etag", .sha256),
            ([("Content-MD5", Self.base64(md5))], true, "Content-MD5", .md5),
            // Content-MD5 on a ranged reply covers the range: ignored.
            ([("Content-MD5", Self.base64(md5))], false, nil, nil),
            // Content-Digest covers one message only: ignored.
            ([("Content-Digest", "sha-256=:\(Self.base64(sha256)):")], false, nil, nil),
            // Malformed values: ignored, no trap.
            ([("Repr-Digest", "sha-256=:not base64!:, sha-256=abc, =::")], false, nil, nil),
        ]
        for (fields, whole, source, algorithm) in cases {
            let found = ServerDigests.parse(head(fields), wholeBody: whole)
            #expect(found.digests.first?.source == source, "\(fields)")
            #expect(found.digests.first?.checksum.algorithm == algorithm, "\(fields)")
            if let algorithm { #expect(found.digests.first?.checksum.digest == Self.content.digest(algorithm)) }
        }
    }

    /// S3 and GCS publish CRCs: read when nothing cryptographic is there, after it when it is.
    @Test func crcHeadersAreReadBelowTheHashes() {
        let crc32c = Self.content.digest(.crc32c), crc32 = Self.content.digest(.crc32), md5 = Self.content.digest(.md5)
        let cases: [([(String, String)], String, DigestAlgorithm)] = [
            ([("x-goog-hash", "crc32c=\(Self.base64(crc32c))")], "x-goog-hash", .crc32c),
            ([("x-goog-hash", "crc32c=\(Self.base64(crc32c)),md5=\(Self.base64(md5))")], "x-goog-hash", .md5),
            ([("x-amz-checksum-crc32c", Self.base64(crc32c)), ("x-amz-checksum-type", "FULL_OBJECT")], "x-amz-checksum-crc32c", .crc32c),
            ([("x-amz-checksum-crc32", Self.base64(crc32))], "x-amz-checksum-crc32", .crc32),
        ]
        for (fields, source, algorithm) in cases {
            let found = ServerDigests.parse(head(fields), wholeBody: false)
            #expect(found.digests.first?.source == source && found.digests.first?.checksum.algorithm == algorithm, "\(fields)")
            #expect(found.digests.first?.checksum.digest == Self.content.digest(algorithm), "\(fields)")
        }
    }

    /// GCS's decompressive transcoding: an object stored gzip-compressed is served decoded to a
    /// client that does not accept gzip, with the stored object's hashes. They are said and
    /// not checked (a false mismatch would leave no file); served as stored, they are checked.
    @Test func transcodedGCSHashesAreSaidAndIgnored() {
        let md5 = Self.base64(Self.content.digest(.md5))
        let decoded = ServerDigests.parse(head([("x-goog-hash", "md5=\(md5)"), ("x-goog-stored-content-encoding", "gzip")], status: 200),
                                          wholeBody: true)
        #expect(decoded.digests.isEmpty)
        #expect(decoded.notices.count == 1 && decoded.notices[0].contains("GCS transcoding"), "\(decoded.notices)")
        let asStored = ServerDigests.parse(head([("x-goog-hash", "md5=\(md5)"), ("x-goog-stored-content-encoding", "gzip"),
                                                 ("Content-Encoding", "gzip")], status: 200), wholeBody: true)
        #expect(asStored.digests.first?.source == "x-goog-hash" && asStored.notices.isEmpty)
        let identity = ServerDigests.parse(head([("x-goog-hash", "md5=\(md5)"), ("x-goog-stored-content-encoding", "identity")]),
                                           wholeBody: false)
        #expect(identity.digests.first?.source == "x-goog-hash")
    }

    /// End to end: a transcoded object whose stored hash differs from the served bytes is
    /// saved (before, a checksum mismatch, exit 5 and no file), with the notice.
    @Test func aTranscodedGCSObjectIsSaved() async throws {
        try await withTestServer { server in
            var md5 = Self.content.digest(.md5)
            md5[0] ^= 1  // the stored (compressed) object's MD5, not the served bytes'
            serve(server, extra: [("x-goog-hash", "md5=\(Self.base64(md5))"), ("x-goog-stored-content-encoding", "gzip")])
            let dir = try TemporaryDirectory()
            let (result, notices) = await downloadNoticing(server.url("/f.bin"), to: dir.file("f.bin"), options: testOptions(connections: 2))
            guard case .success(let done) = result else { Issue.record("must succeed: \(result)"); return }
            #expect(done.checksumSource == nil)
            #expect(compareFile(dir.file("f.bin"), with: Self.content) == nil)
            #expect(notices.contains { $0.contains("GCS transcoding") }, "\(notices)")
        }
    }

    @Test func compositeValuesAreSaidAndIgnored() {
        let composite = ServerDigests.parse(head([("x-amz-checksum-sha256", "q83vEjRWeJA=-7"), ("x-amz-checksum-type", "COMPOSITE")]),
                                            wholeBody: false)
        #expect(composite.digests.isEmpty)
        #expect(composite.notices.count == 1 && composite.notices[0].contains("composite"))
        let crc = ServerDigests.parse(head([("x-amz-checksum-crc32c", "n03x6A==-3")]), wholeBody: false)
        #expect(crc.digests.isEmpty && crc.notices.first?.contains("composite") == true)
    }

    /// CRC-64/NVME is checked where ISA-L has it (2.31+); elsewhere it is said, not failed.
    @Test func crc64nvmeIsCheckedWhereTheLibraryHasIt() {
        let value = DigestAlgorithm.crc64nvme.isAvailable ? Self.base64(Self.content.digest(.crc64nvme)) : "AAAAAAAAAAA="
        let found = ServerDigests.parse(head([("x-amz-checksum-crc64nvme", value)]), wholeBody: false)
        if DigestAlgorithm.crc64nvme.isAvailable {
            #expect(found.digests.first?.checksum.algorithm == .crc64nvme && found.notices.isEmpty)
        } else {
            #expect(found.digests.isEmpty && found.notices.first?.contains("ISA-L 2.31") == true, "\(found)")
            #expect(throws: SpateError.self) { try Checksum(parsing: "crc64nvme:ae8b14860a799888") }
        }
    }

    /// The test server with `extra` headers on every reply.
    func serve(_ server: TestServer, extra: [(String, String)]) {
        let file = TestServer.File(content: Self.content)
        server.addFile("/f.bin", file)
        server.setHook { request in
            var plan = TestServer.standardPlan(for: request, file: file)
            for (name, value) in extra { plan.setHeader(name, value) }
            return plan
        }
    }

    /// Every kind of server digest, right and wrong: right → exact file, and the result names
    /// the header (the summary and the `finished` event print it); wrong → checksum mismatch
    /// (exit 5), no file. Ranged replies carry it (Content-MD5 only on a whole reply: below).
    static let kinds: [(header: String, algorithm: DigestAlgorithm)] = [
        ("Repr-Digest", .sha256), ("x-amz-checksum-sha256", .sha256), ("x-amz-checksum-crc32c", .crc32c),
        ("x-amz-checksum-crc32", .crc32), ("x-goog-hash", .md5), ("X-Linked-Etag", .sha256),
    ] + (DigestAlgorithm.crc64nvme.isAvailable ? [("x-amz-checksum-crc64nvme", .crc64nvme)] : [])

    static func value(_ header: String, _ digest: [UInt8]) -> String {
        switch header {
        case "Repr-Digest": "sha-256=:\(base64(digest)):"
        // GCS sends both; MD5 is preferred to the CRC (here a wrong one, never checked).
        case "x-goog-hash": "crc32c=AAAAAA==,md5=\(base64(digest))"
        case "X-Linked-Etag": "\"\(Hex.encode(digest))\""
        default: base64(digest)
        }
    }

    @Test(arguments: Self.kinds.indices, [false, true])
    func eachServerDigestIsVerifiedAndNamed(kind: Int, wrong: Bool) async throws {
        let (header, algorithm) = Self.kinds[kind]
        try await withTestServer { server in
            var digest = Self.content.digest(algorithm)
            if wrong { digest[1] ^= 0x10 }
            serve(server, extra: [(header, Self.value(header, digest)), ("x-amz-checksum-type", "FULL_OBJECT")])
            let dir = try TemporaryDirectory()
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: testOptions(connections: 4))
            switch result {
            case .success(let r):
                #expect(!wrong, "\(header)")
                #expect(r.checksumSource == header && r.verifiedChecksum?.algorithm == algorithm, "\(header)")
                #expect(compareFile(dir.file("f.bin"), with: Self.content) == nil)
            case .failure(let error):
                #expect(wrong && error.kind == .checksumMismatch, "\(header): \(error)")
                #expect(!FileManager.default.fileExists(atPath: dir.file("f.bin")))
            }
        }
    }

    /// Content-MD5 covers the reply it comes with: checked when one reply carries the whole file.
    @Test(arguments: [false, true])
    func contentMD5IsCheckedOnAWholeReply(wrong: Bool) async throws {
        try await withTestServer { server in
            var md5 = Self.content.digest(.md5)
            if wrong { md5[0] ^= 1 }
            serve(server, extra: [("Content-MD5", Self.base64(md5))])
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 2)
            o.wholeFileBytes = 4 << 20
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            switch result {
            case .success(let r):
                #expect(!wrong && r.checksumSource == "Content-MD5")
                #expect(compareFile(dir.file("f.bin"), with: Self.content) == nil)
            case .failure(let error):
                #expect(wrong && error.kind == .checksumMismatch, "\(error)")
                #expect(dir.contents.isEmpty, "\(dir.contents)")
            }
        }
    }

    @Test func aServerDigestThatDisagreesWithTheChecksumStopsBeforeAnyByte() async throws {
        try await withTestServer { server in
            var other = Self.content.digest(.sha256)
            other[5] ^= 0x40
            serve(server, extra: [("x-amz-checksum-sha256", Self.base64(other))])
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 4)
            o.checksum = sha256Checksum(of: Self.content)
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            guard case .failure(let error) = result else { Issue.record("downloaded"); return }
            #expect(error.kind == .checksumMismatch && error.message.contains("x-amz-checksum-sha256"))
            #expect(server.requests.count == 1, "only the probe")
            // --no-server-digest: the user's checksum alone decides (and it is right).
            o.serverDigests = false
            let again = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            guard case .success(let r) = again else { Issue.record("\(again)"); return }
            #expect(r.checksumSource == "--checksum")
        }
    }

    /// A server's digest covers the whole file: a `--range` download neither checks it nor
    /// holds it against `--checksum` (which then covers the range).
    @Test func aRangeIgnoresTheWholeFilesDigest() async throws {
        try await withTestServer { server in
            serve(server, extra: [("Repr-Digest", "sha-256=:\(Self.base64(Self.content.digest(.sha256))):")])
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 2)
            o.byteRange = try PartialByteRange(parsing: "0-1048575")
            let part = Self.content.bytes(0, 1 << 20)
            let result = await download(server.url("/f.bin"), to: dir.file("part.bin"), options: o)
            guard case .success(let r) = result else { Issue.record("\(result)"); return }
            #expect(r.checksumSource == nil && r.bytes == 1 << 20)
            o.checksum = try Checksum(algorithm: .sha256, digest: part.withUnsafeBytes { Digest.hash(.sha256, $0) })
            o.overwrite = true
            let checked = await download(server.url("/f.bin"), to: dir.file("part.bin"), options: o)
            guard case .success(let c) = checked else { Issue.record("\(checked)"); return }
            #expect(c.checksumSource == "--checksum")
        }
    }

    @Test func aSmallFileInOneReplyIsCheckedToo() async throws {
        try await withTestServer { server in
            var md5 = Self.content.digest(.md5)
            md5[0] ^= 1
            serve(server, extra: [("x-goog-hash", "md5=\(Self.base64(md5))")])
            let dir = try TemporaryDirectory()
            var o = testOptions(connections: 2)
            o.wholeFileBytes = 4 << 20
            let result = await download(server.url("/f.bin"), to: dir.file("f.bin"), options: o)
            #expect(result.failureKind == .checksumMismatch, "\(result)")
            #expect(dir.contents.isEmpty, "\(dir.contents)")
        }
    }
}
