"""Makes the small archives and bad inputs in tests/data (run from this folder with any Python 3).
The committed files came from this script; tests never run it."""
import gzip, io, zipfile

def gz(name, data):
    # mtime=0 keeps the bytes the same on every run
    with open(name, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as g:
            g.write(data)

jsonl = open("pairs.jsonl", "rb").read()
gz("pairs.jsonl.gz", jsonl)

# truncated: the whole deflate stream minus its last 12 bytes, so no end block and no trailer
full = open("pairs.jsonl.gz", "rb").read()
open("truncated.jsonl.gz", "wb").write(full[:-12])

def zip_of(name, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for mname, data, method in members:
            info = zipfile.ZipInfo(mname, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = method
            z.writestr(info, data)
    open(name, "wb").write(buf.getvalue())
    return buf.getvalue()

csv = open("negopt.csv", "rb").read()
zip_of("pairs.zip", [("README.txt", b"not data\n", zipfile.ZIP_STORED),
                     ("data/pairs.jsonl", jsonl, zipfile.ZIP_DEFLATED),
                     ("negopt.csv", csv, zipfile.ZIP_STORED)])

# corrupt: one member's deflate data damaged in the middle (the directory is intact)
good = zip_of("crc.zip", [("pairs.jsonl", jsonl * 4, zipfile.ZIP_DEFLATED)])
bad = bytearray(good)
start = 30 + len("pairs.jsonl")
for i in range(start + 20, start + 40):
    bad[i] ^= 0x5A
open("corrupt.zip", "wb").write(bytes(bad))
# cut: the end-of-central-directory record is gone
open("cut.zip", "wb").write(good[: len(good) - 30])
# a stored member with one byte changed: only the CRC-32 check can notice
stored = bytearray(zip_of("badcrc.zip", [("negopt.csv", csv, zipfile.ZIP_STORED)]))
stored[30 + len("negopt.csv") + 5] ^= 0x01
open("badcrc.zip", "wb").write(bytes(stored))
import os
os.remove("crc.zip")

# ZIP64 records on a small archive: zipfile writes them whenever its limits are exceeded, so lower them
zipfile.ZIP64_LIMIT = 5
zipfile.ZIP_FILECOUNT_LIMIT = 0
z64 = bytearray(zip_of("zip64.zip", [("pairs.jsonl", jsonl, zipfile.ZIP_DEFLATED)]))
# zipfile still writes the real counts and offset in the classic end record when they fit; mark them
# 0xFFFF / 0xFFFFFFFF (as APPNOTE 4.4.1.4 allows) so that only the ZIP64 end record tells them
eocd = z64.rfind(b"PK\x05\x06")
z64[eocd + 8:eocd + 12] = b"\xff\xff\xff\xff"
z64[eocd + 12:eocd + 20] = b"\xff\xff\xff\xff\xff\xff\xff\xff"
open("zip64.zip", "wb").write(bytes(z64))
