"""placeholder"""
import os
os.environ["TTS_HOOK_RAN"]="1"
