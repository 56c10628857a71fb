"""An event file written by PyTorch's SummaryWriter, for tests/test_tensorboard.c: an encoding of the
same scalars made by independent code (tensorboard's own protobuf and record writer).

The values and wall times are fixed here and repeated in the C test:
  train/loss  step i = 0..4: 2.5 - 0.25 * i     wall time 1700000000.5 + i
  train/lr    step i = 0..4: 1e-4 * (i + 1)     wall time 1700000000.5 + i
  eval/loss   step 4: 1.75                      wall time 1700000010.25

    HF_HUB_OFFLINE=1 /work/venv/bin/python tests/ref/make_tensorboard_fixture.py
"""
import glob
import os
import shutil
import tempfile

from torch.utils.tensorboard import SummaryWriter


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    tmp = tempfile.mkdtemp()
    w = SummaryWriter(log_dir=tmp)
    for i in range(5):
        w.add_scalar("train/loss", 2.5 - 0.25 * i, global_step=i, walltime=1700000000.5 + i)
        w.add_scalar("train/lr", 1e-4 * (i + 1), global_step=i, walltime=1700000000.5 + i)
    w.add_scalar("eval/loss", 1.75, global_step=4, walltime=1700000010.25)
    w.close()
    (src,) = glob.glob(os.path.join(tmp, "events.out.tfevents.*"))
    dst = os.path.join(here, "torch_events.tfevents")
    shutil.copyfile(src, dst)
    shutil.rmtree(tmp)
    print("wrote", dst, os.path.getsize(dst), "bytes")


if __name__ == "__main__":
    main()
