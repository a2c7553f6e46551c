// pyannoteAI's media tutorial (uploadAudio.ts), unchanged but for the host and the usage line
// at the end: tests/test_media_node.py runs it against tympan.
import axios from 'axios';
import fs from 'fs';

const HOST = process.env.PYANNOTE_HOST; // was https://api.pyannote.ai

async function uploadAudioFile(inputPath: string, objectKey: string, apiKey: string): Promise<void> {
  try {
    // Create the pre-signed PUT URL
    const response = await axios.post(
      `${HOST}/v1/media/input`,
      { url: `media://${objectKey}` }, // Replace with your desired object-key
      {
        headers: {
          'Authorization': `Bearer ${apiKey}`, // In production, use environment variables: process.env.PYANNOTE_API_KEY
          'Content-Type': 'application/json'
        }
      }
    );

    const presignedUrl = response.data.url;

    // Upload local file to the pre-signed URL
    console.log(`Uploading ${inputPath} to ${presignedUrl}`);
    
    const fileData = fs.readFileSync(inputPath);
    await axios.put(presignedUrl, fileData, {
      headers: {
        'Content-Type': 'application/octet-stream'
      }
    });

    console.log('File uploaded successfully!');
  } catch (error) {
    console.error('Error uploading file:', error);
    throw error;
  }
}

// Usage
uploadAudioFile(process.argv[2], process.argv[3], process.env.PYANNOTE_API_KEY as string).catch(() => {
  process.exit(1);
});
