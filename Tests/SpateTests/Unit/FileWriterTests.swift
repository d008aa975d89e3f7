import Glibc
@testable import Spate
import SpateTestContent
import Testing

/// The writer thread and its staging, on a real file: a pool far smaller than the work, so
/// producers wait for buffers, the writer batches, and every byte must still land at its offset
/// with the CRC the journal would record.
@Suite("File writer")
struct FileWriterTests {
    /// Sinks hold one buffer each; when more requests are in flight than the pool was sized
    /// for (the connection count fell), a sink must get a buffer at once rather than wait for
    /// one that nothing will give back (the loop thread waited 500 ms per buffer: a crawl).
    @Test func moreHoldersThanThePoolStillGetBuffersAtOnce() throws {
        let writer = FileWriter(buffers: 2, bufferBytes: 64 * 1024)
        defer { writer.stop() }
        writer.resize(forConnections: 1, bufferBytes: 64 * 1024)  // as when the tuner lowers the count: room for 9
        var held: [FileWriter.Buffer] = []
        for _ in 0..<12 {
            guard let buffer = writer.acquire() else {
                Issue.record("no buffer after \(held.count): the caller would have waited and written synchronously")
                break
            }
            held.append(buffer)  // partly filled, kept by its sink
        }
        #expect(held.count == 12)
        for buffer in held { writer.release(buffer) }
        #expect(writer.allocatedBuffers == 9, "back within the capacity once the sinks let go")
    }

    @Test func producersSharingATinyPoolWriteEveryByteAtItsOffset() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.file("out.bin")
        let size: Int64 = 3 << 20
        let content = GeneratedContent(seed: 7, size: size)
        let file = try OutputFile(creatingFor: path, replacePartial: true)
        // 2 producers, 3 buffers of 4 KiB: producers often find the pool empty and wait.
        let writer = FileWriter(buffers: 3, bufferBytes: 4096)
        let target = WriteTarget(file: file, computesCRC: true)
        writer.attach()
        let halves = [ByteRange(0, size / 2), ByteRange(size / 2, size)]
        let results = await withTaskGroup(of: (ByteRange, SpateError?, HashedRange?).self) { group in
            for (index, half) in halves.enumerated() {
                group.addTask {
                    var rng = SeededGenerator(label: "file writer producer \(index)")
                    for _ in 0..<(index * 7) { _ = rng.next() }  // the producers' piece sizes differ
                    var output = StagedOutput(writer: writer, target: target)
                    var offset = half.start
                    while offset < half.end {
                        // Pieces from 1 byte to ~3 buffers: some fill a buffer exactly, some span several.
                        let n = min(half.end - offset, Int64.random(in: 1...12_288, using: &rng))
                        let bytes = content.bytes(offset, offset + n)
                        if let error = bytes.withUnsafeBytes({ output.write($0, at: offset) }) {
                            return (half, error, nil)
                        }
                        offset += n
                    }
                    let error = await output.flush()
                    return (half, error, output.group.hashedRange(from: half.start))
                }
            }
            var all: [(ByteRange, SpateError?, HashedRange?)] = []
            for await result in group { all.append(result) }
            return all
        }
        writer.stop()
        for (half, error, hashed) in results {
            #expect(error == nil)
            #expect(hashed?.range == half, "the writes of \(half) are contiguous and complete")
            let expected = content.bytes(half.start, half.end).withUnsafeBytes { CRC32.checksum($0) }
            #expect(hashed?.crc == expected, "the journal's CRC of \(half)")
        }
        file.close()
        #expect(content.differences(inFileAt: OutputFile.partPath(for: path)) == nil)
    }

    /// One file, a writer of four 4 KiB buffers, and one request's staging.
    struct OneFile {
        let dir: TemporaryDirectory
        let path: String
        let content: GeneratedContent
        let file: OutputFile
        let writer = FileWriter(buffers: 4, bufferBytes: 4096)
        let target: WriteTarget

        init(seed: UInt64, size: Int64, crc: Bool) throws {
            dir = try TemporaryDirectory()
            path = dir.file("out.bin")
            content = GeneratedContent(seed: seed, size: size)
            file = try OutputFile(creatingFor: path, replacePartial: true)
            target = WriteTarget(file: file, computesCRC: crc)
        }
    }

    @Test func aRequestEndingOnAFullBufferIsFlushed() async throws {
        let f = try OneFile(seed: 8, size: 8192, crc: false)
        let (path, content, file, writer) = (f.path, f.content, f.file, f.writer)
        var output = StagedOutput(writer: writer, target: f.target)
        // Exactly two full buffers: nothing is left staged, so flush has no buffer to submit and
        // must still see both writes done.
        let error = content.bytes(0, 8192).withUnsafeBytes { output.write($0, at: 0) }
        #expect(error == nil)
        #expect(await output.flush() == nil)
        #expect(output.group.hashedRange(from: 0)?.range == ByteRange(0, 8192))
        writer.stop()
        file.close()
        #expect(content.differences(inFileAt: OutputFile.partPath(for: path)) == nil)
    }

    /// One writer serves several files (a session's downloads): each buffer lands in its own
    /// file, and draining one file waits for exactly its writes.
    @Test func oneWriterServesSeveralFiles() async throws {
        let dir = try TemporaryDirectory()
        let writer = FileWriter(buffers: 2, bufferBytes: 4096)
        writer.attach()
        let contents = (0..<3).map { GeneratedContent(seed: UInt64(20 + $0), size: 100_000 + Int64($0) * 7) }
        var files: [OutputFile] = []
        for (i, content) in contents.enumerated() {
            let file = try OutputFile(creatingFor: dir.file("f\(i).bin"), replacePartial: true)
            files.append(file)
            let target = WriteTarget(file: file, computesCRC: false)
            var output = StagedOutput(writer: writer, target: target)
            let error = content.bytes(0, content.size).withUnsafeBytes { output.write($0, at: 0) }
            #expect(error == nil)
            #expect(await output.flush() == nil)
            writer.drain(target)
            #expect(target.outstanding == 0)
        }
        writer.detach()
        writer.stop()
        for (i, content) in contents.enumerated() {
            files[i].close()
            #expect(content.differences(inFileAt: OutputFile.partPath(for: dir.file("f\(i).bin"))) == nil)
        }
    }

    /// A request that flushes after the writer stopped (its session shut down mid-transfer)
    /// writes its last buffer itself instead of queueing it for a thread that is gone.
    @Test func aFlushAfterTheWriterStoppedStillWrites() async throws {
        let f = try OneFile(seed: 9, size: 10_000, crc: true)
        let (path, content, file, writer, target) = (f.path, f.content, f.file, f.writer, f.target)
        var output = StagedOutput(writer: writer, target: target)
        #expect(content.bytes(0, 6000).withUnsafeBytes { output.write($0, at: 0) } == nil)  // one buffer queued, one staged
        writer.stop()
        #expect(content.bytes(6000, 10_000).withUnsafeBytes { output.write($0, at: 6000) } == nil)
        #expect(await output.flush() == nil)
        #expect(output.group.hashedRange(from: 0)?.range == ByteRange(0, 10_000))
        writer.drain(target)
        file.close()
        #expect(content.differences(inFileAt: OutputFile.partPath(for: path)) == nil)
    }
}

